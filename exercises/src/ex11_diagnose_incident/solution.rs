//! The reference for exercise 11: one signal per incident, each judged over the
//! window between the two scrapes, with thresholds far from both healthy and ill
//! values. The runbooks (docs/src/phase3/runbooks/) and alerts
//! (phase3-observability/deploy/prometheus/alerts.yml) read the same signals.

use super::{Diagnose, Diagnosis, Finding, Samples, quantile};

#[derive(Debug)]
pub struct OnCall;

const MIB: f64 = 1024.0 * 1024.0;

impl Diagnose for OnCall {
    fn new() -> Self {
        OnCall
    }

    fn diagnose(&self, before: &Samples, after: &Samples) -> Diagnosis {
        let delta =
            |name: &str| after.sum(name, &[]).unwrap_or(0.0) - before.sum(name, &[]).unwrap_or(0.0);

        // Payments over the window (exercise 9). Healthy: milliseconds. The slowdown
        // makes *every* payment slow, so the median moves, not only the tail (a busy
        // process can delay one payment, which moves p99 alone).
        let window = after.histogram_since(before, "payment_duration_seconds", &[]);
        let payment_p50 = quantile(0.5, &window).unwrap_or(0.0);
        let payment_p99 = quantile(0.99, &window).unwrap_or(0.0);

        // Lag is a gauge: its value now. The notification group, against the rest.
        let lag_of = |notification: bool| {
            after
                .0
                .iter()
                .filter(|s| s.name == "kafka_consumer_lag")
                .filter(|s| {
                    s.labels
                        .get("group")
                        .is_some_and(|g| g.contains("notification") == notification)
                })
                .map(|s| s.value)
                .sum::<f64>()
        };
        let (notification_lag, other_lag) = (lag_of(true), lag_of(false));
        // Lag alone misleads when the broker is the bottleneck: then every group lags.
        // The notification consumer's own time per event says whether *it* is slow.
        let notification_consumer = after
            .0
            .iter()
            .filter(|s| s.name.starts_with("event_processing_duration_seconds"))
            .filter_map(|s| s.labels.get("consumer"))
            .find(|c| c.contains("notification"))
            .cloned()
            .unwrap_or_default();
        let handling = after.histogram_since(
            before,
            "event_processing_duration_seconds",
            &[("consumer", notification_consumer.as_str())],
        );
        let notification_p50_ms = 1000.0 * quantile(0.5, &handling).unwrap_or(0.0);

        // Memory: growth of the resident set over the window.
        let rss_growth = delta("process_resident_memory_bytes") / MIB;

        // CPU per order-API request: CPU seconds used / requests served.
        let requests = |samples: &Samples| {
            samples
                .0
                .iter()
                .filter(|s| s.name == "http_requests_total")
                .filter(|s| {
                    s.labels
                        .get("route")
                        .is_some_and(|r| r.starts_with("/orders"))
                })
                .map(|s| s.value)
                .sum::<f64>()
        };
        let served = requests(after) - requests(before);
        let cpu_ms_per_request = if served > 0.0 {
            1000.0 * delta("process_cpu_seconds_total") / served
        } else {
            0.0
        };

        // And how long a read of an order takes (median over the window): a CPU-bound
        // hot path makes requests slow *and* CPU-hungry; slowness alone is waiting.
        let reads = after.histogram_since(
            before,
            "http_request_duration_seconds",
            &[("route", "/orders/{id}")],
        );
        let read_p50_ms = 1000.0 * quantile(0.5, &reads).unwrap_or(0.0);

        let evidence = format!(
            "payment p50 {payment_p50:.3} s, p99 {payment_p99:.3} s; notification lag {notification_lag} (others \
             {other_lag}), {notification_p50_ms:.0} ms per event; RSS {rss_growth:+.1} MiB; CPU {cpu_ms_per_request:.1} ms per \
             order-API request ({served} requests), read p50 {read_p50_ms:.1} ms"
        );
        // The most distinct signals first: seconds against milliseconds, 25 ms reads
        // against 1 ms, hundreds of MiB against tens. The backlog last: its lag is
        // tens, but a busy broker makes every group lag by tens too (seen in CI:
        // notification 27, the others together 25); its time per event (~750 ms
        // against ~7 ms) is what tells it apart.
        let finding = if payment_p50 > 1.0 {
            Finding::PaymentSlowdown
        } else if read_p50_ms > 15.0 && cpu_ms_per_request > 10.0 {
            // Healthy: reads ~1 ms and ~5 ms of CPU per request; the burn adds 25 ms of
            // wall time to each (less CPU when other processes take the cores). CPU
            // per request alone also grows with a long window — slow payments give
            // ~15–18 ms — which is why payments are judged first.
            Finding::CpuHotPath
        } else if rss_growth > 96.0 {
            // The leak: +190 to +375 MiB. A process also grows by itself while it warms
            // up (seen: +41.6 MiB in a first round with no leak), so the bar is high.
            Finding::MemoryLeak
        } else if notification_p50_ms > 200.0 {
            // Healthy: ~5 ms per event; 200 ms more each way to Redis: ~750 ms.
            Finding::NotificationBacklog
        } else {
            Finding::Healthy
        };
        Diagnosis { finding, evidence }
    }
}
