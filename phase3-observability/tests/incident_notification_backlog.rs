//! Incident `notification-backlog`: Redis answers the notification service slowly, so
//! it consumes slower than events arrive. The signal that must move is
//! `kafka_consumer_lag` of the notification group: it grows while the incident is
//! on — while every other group keeps up and orders are still delivered (a slow
//! consumer in its own group holds up nobody else) — and drains once it is off.

mod support;

use phase3_observability::incidents::IncidentSettings;
use phase3_observability::scrape::Samples;
use std::time::{Duration, Instant};
use support::{Options, System};

const ORDERS: usize = 12;

fn lag(s: &Samples, group: &str) -> f64 {
    s.sum("kafka_consumer_lag", &[("group", group)])
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notification_backlog_grows_lag_which_drains_when_switched_off() {
    let system = System::start(Options {
        incidents: IncidentSettings {
            redis_latency: Duration::from_millis(150),
            ..IncidentSettings::default()
        },
        ..Options::default()
    })
    .await;
    let notification = system.ns("notification-service");
    let payment = system.ns("payment-service");
    let warmup = vec![system.place().await];
    system
        .wait_delivered(&warmup, Duration::from_secs(60))
        .await;
    system
        .scrape_until(Duration::from_secs(30), "no lag before the incident", |s| {
            s.sum("kafka_consumer_lag", &[]) == Some(0.0)
        })
        .await;

    system.switch("notification-backlog", true).await;
    let mut ids = Vec::new();
    for _ in 0..ORDERS {
        ids.push(system.place().await);
    }
    // Orders go on: every other service keeps up.
    system.wait_delivered(&ids, Duration::from_secs(120)).await;
    let mut series = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        let s = system.scrape().await;
        series.push((lag(&s, &notification), lag(&s, &payment)));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let peak = series.iter().map(|(n, _)| *n).fold(0.0, f64::max);
    let payment_peak = series.iter().map(|(_, p)| *p).fold(0.0, f64::max);
    println!(
        "notification lag while on: {:?}",
        series.iter().map(|(n, _)| *n).collect::<Vec<_>>()
    );
    assert!(
        peak >= 20.0,
        "notification lag grows behind a slow Redis: {series:?}"
    );
    assert!(
        payment_peak <= 2.0,
        "payment keeps up meanwhile: {series:?}"
    );

    system.switch("notification-backlog", false).await;
    let drained_at = Instant::now();
    system
        .scrape_until(Duration::from_secs(90), "notification lag drains", |s| {
            lag(s, &notification) == 0.0
        })
        .await;
    println!(
        "peak notification lag {peak}, payment lag ≤ {payment_peak}; drained {:.1} s after switching off",
        drained_at.elapsed().as_secs_f64()
    );
    system.stop().await;
}
