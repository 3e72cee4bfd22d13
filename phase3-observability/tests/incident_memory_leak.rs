//! Incident `memory-leak`: every consumed event leaves bytes behind. The signal that
//! must move is `process_resident_memory_bytes`: it climbs with the events consumed
//! (both read from `/metrics`), by about the bytes leaked per event.

mod support;

use phase3_observability::incidents::IncidentSettings;
use std::time::Duration;
use support::{Options, System, value};

const LEAK: usize = 512 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_leak_makes_rss_climb_with_the_events_consumed() {
    let system = System::start(Options {
        incidents: IncidentSettings {
            leak_bytes_per_event: LEAK,
            ..IncidentSettings::default()
        },
        ..Options::default()
    })
    .await;
    // Warm up: connection pools, buffers and caches reach their working size.
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(system.place().await);
    }
    system.wait_delivered(&ids, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s0 = system.scrape().await;

    system.switch("memory-leak", true).await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(system.place().await);
    }
    system.wait_delivered(&ids, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s1 = system.scrape().await;

    let events =
        value(&s1, "events_processed_total", &[]) - value(&s0, "events_processed_total", &[]);
    let rss0 = value(&s0, "process_resident_memory_bytes", &[]);
    let rss1 = value(&s1, "process_resident_memory_bytes", &[]);
    let expected = events * LEAK as f64;
    let mib = |b: f64| b / (1024.0 * 1024.0);
    println!(
        "{events} events consumed while leaking {} KiB each: RSS {:.1} → {:.1} MiB (+{:.1}, expected ≈ +{:.1})",
        LEAK / 1024,
        mib(rss0),
        mib(rss1),
        mib(rss1 - rss0),
        mib(expected)
    );
    assert!(
        events >= 8.0 * 20.0,
        "each order is ~30 consumed events: {events}"
    );
    assert!(
        rss1 - rss0 >= 0.8 * expected,
        "RSS climbs by about what was leaked"
    );

    system.switch("memory-leak", false).await;
    system.stop().await;
}
