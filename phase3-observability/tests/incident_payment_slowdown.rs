//! Incident `payment-slowdown`: the provider answers slowly. The signal that must
//! move is p99 of `payment_duration_seconds` — computed from the histogram's buckets
//! between two scrapes, as `histogram_quantile` over a window would — while the
//! order API, which only writes to its outbox, stays fast: the slowness is isolated
//! behind the event flow.

mod support;

use common::payment::LatencyRange;
use phase3_observability::incidents::IncidentSettings;
use phase3_observability::scrape::quantile;
use std::time::Duration;
use support::{Options, System, value};

const ORDERS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payment_slowdown_raises_p99_payment_latency_and_not_the_api() {
    let system = System::start(Options {
        provider_latency: "20ms..40ms".parse::<LatencyRange>().unwrap(),
        incidents: IncidentSettings {
            payment_latency: Duration::from_millis(400),
            ..IncidentSettings::default()
        },
        ..Options::default()
    })
    .await;
    let s0 = system.scrape().await;
    let mut ids = Vec::new();
    for _ in 0..ORDERS {
        ids.push(system.place().await);
    }
    system.wait_delivered(&ids, Duration::from_secs(90)).await;
    let s1 = system.scrape().await;
    let before = quantile(
        0.99,
        &s1.histogram_since(&s0, "payment_duration_seconds", &[]),
    )
    .unwrap();

    let state = system.switch("payment-slowdown", true).await;
    assert!(
        state["description"].as_str().unwrap().contains("400ms"),
        "{state}"
    );
    let on = system.scrape().await;
    assert_eq!(
        value(&on, "incident_active", &[("incident", "payment-slowdown")]),
        1.0
    );

    let mut ids = Vec::new();
    for _ in 0..ORDERS {
        ids.push(system.place().await);
    }
    system.wait_delivered(&ids, Duration::from_secs(120)).await;
    let s2 = system.scrape().await;
    let window = s2.histogram_since(&s1, "payment_duration_seconds", &[]);
    assert_eq!(
        window.last().unwrap().1,
        ORDERS as f64,
        "every payment of the window timed"
    );
    let during = quantile(0.99, &window).unwrap();
    let api = quantile(
        0.99,
        &s2.histogram_since(
            &s1,
            "http_request_duration_seconds",
            &[("method", "POST"), ("route", "/orders")],
        ),
    )
    .unwrap();
    println!(
        "payment p99: {before:.3} s before, {during:.3} s during the slowdown; POST /orders p99 {api:.3} s"
    );

    // 400 ms each way on every request to the provider: at least +0.8 s per charge.
    assert!(before < 0.5, "p99 before the incident: {before}");
    assert!(
        during >= before + 0.6,
        "p99 during: {during} (before: {before})"
    );
    assert!(
        api < 0.5,
        "the order API does not wait for payments: p99 {api}"
    );

    system.switch("payment-slowdown", false).await;
    let off = system.scrape().await;
    assert_eq!(
        value(&off, "incident_active", &[("incident", "payment-slowdown")]),
        0.0
    );
    system.stop().await;
}
