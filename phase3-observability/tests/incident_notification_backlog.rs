//! Incident `notification-backlog`: Redis answers the notification service slowly, so
//! it consumes slower than events arrive. The signal that must move is
//! `kafka_consumer_lag` of the notification group: it grows while the incident is
//! on — while every other group keeps up and orders are still delivered (a slow
//! consumer in its own group holds up nobody else) — and drains once it is off.

mod support;

use phase2_events::flow::Service;
use phase3_observability::incidents::IncidentSettings;
use phase3_observability::scrape::Samples;
use std::time::{Duration, Instant};
use support::{Options, System};

/// Orders placed while the incident is on: six notifications each. The consumer
/// handles up to 16 events of different orders at once, so it only falls behind when
/// they arrive faster than 16 per event's handling time (2 Redis round trips).
const ORDERS: usize = 60;

fn lag(s: &Samples, group: &str) -> f64 {
    s.sum("kafka_consumer_lag", &[("group", group)])
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notification_backlog_grows_lag_which_drains_when_switched_off() {
    let system = System::start(Options {
        incidents: IncidentSettings {
            // The incident's default: 2 round trips × 2 × 200 ms = 0.8 s per event, so
            // 16 at once finish about 20 events/s, while 60 orders bring 360 in a few
            // seconds. (More latency would pass Redis's 500 ms response timeout, and
            // the notifications would go to the retry topic instead of waiting.)
            redis_latency: Duration::from_millis(200),
            ..IncidentSettings::default()
        },
        ..Options::default()
    })
    .await;
    let notification = system.ns(Service::Notification.group());
    let payment = system.ns(Service::Payment.group());
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
    let mut series = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..ORDERS {
        ids.push(system.place().await);
        let s = system.scrape().await;
        series.push((lag(&s, &notification), lag(&s, &payment)));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Orders go on: every other service keeps up.
    system.wait_delivered(&ids, Duration::from_secs(120)).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let s = system.scrape().await;
        series.push((lag(&s, &notification), lag(&s, &payment)));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let notification_lag: Vec<f64> = series.iter().map(|(n, _)| *n).collect();
    println!("notification lag while on: {notification_lag:?}");
    let peak = notification_lag.iter().copied().fold(0.0, f64::max);
    let first = notification_lag[0];
    let last = *notification_lag.last().unwrap();
    assert!(
        peak >= 20.0 && peak > first,
        "notification lag grows behind a slow Redis: {series:?}"
    );
    assert!(
        last >= 20.0,
        "and stays: the consumer cannot catch up while it is on: {series:?}"
    );
    // Payment's lag is sampled between its commits (every second), so a snapshot
    // may catch a few messages in flight; but it never builds up, and ends at 0.
    let payment_end: Vec<f64> = series.iter().rev().take(3).map(|(_, p)| *p).collect();
    assert!(
        payment_end.iter().all(|p| *p == 0.0),
        "payment keeps up meanwhile: {series:?}"
    );
    let payment_peak = series.iter().map(|(_, p)| *p).fold(0.0, f64::max);

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
