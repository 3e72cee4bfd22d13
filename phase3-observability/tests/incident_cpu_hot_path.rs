//! Incident `cpu-hot-path`: every order API request burns CPU on the async runtime.
//! The signal that must move is CPU time per request — the rise of
//! `process_cpu_seconds_total` over the rise of `http_requests_total` between two
//! scrapes — along with the requests' latency: a CPU-bound slowdown, where the
//! payment slowdown is an IO-bound one (latency up, CPU flat).

mod support;

use phase3_observability::incidents::IncidentSettings;
use phase3_observability::scrape::{Samples, quantile};
use std::time::Duration;
use support::{Options, System, value};

const REQUESTS: usize = 40;

async fn burst(system: &System, id: &str) -> (Samples, Samples) {
    let before = system.scrape().await;
    for _ in 0..REQUESTS {
        system.status(id).await;
    }
    (before, system.scrape().await)
}

fn cpu_per_request(before: &Samples, after: &Samples) -> f64 {
    let cpu = value(after, "process_cpu_seconds_total", &[])
        - value(before, "process_cpu_seconds_total", &[]);
    let requests = value(after, "http_requests_total", &[("route", "/orders/{id}")])
        - value(before, "http_requests_total", &[("route", "/orders/{id}")]);
    assert_eq!(requests, REQUESTS as f64);
    cpu / requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cpu_hot_path_raises_cpu_time_per_request() {
    let system = System::start(Options {
        incidents: IncidentSettings {
            cpu_burn: Duration::from_millis(30),
            ..IncidentSettings::default()
        },
        ..Options::default()
    })
    .await;
    let id = system.place().await;
    system
        .wait_delivered(std::slice::from_ref(&id), Duration::from_secs(60))
        .await;

    let (a0, a1) = burst(&system, &id).await;
    system.switch("cpu-hot-path", true).await;
    let (b0, b1) = burst(&system, &id).await;
    system.switch("cpu-hot-path", false).await;

    let before = cpu_per_request(&a0, &a1);
    let during = cpu_per_request(&b0, &b1);
    let route = [("method", "GET"), ("route", "/orders/{id}")];
    let p99_before = quantile(
        0.99,
        &a1.histogram_since(&a0, "http_request_duration_seconds", &route),
    )
    .unwrap();
    let p99_during = quantile(
        0.99,
        &b1.histogram_since(&b0, "http_request_duration_seconds", &route),
    )
    .unwrap();
    println!(
        "CPU per request {:.1} ms → {:.1} ms; GET /orders/{{id}} p99 {:.1} ms → {:.1} ms",
        before * 1e3,
        during * 1e3,
        p99_before * 1e3,
        p99_during * 1e3
    );
    assert!(
        during >= before + 0.020,
        "30 ms burnt per request shows as CPU per request"
    );
    assert!(p99_during >= 0.025, "and as latency: {p99_during}");
    system.stop().await;
}
