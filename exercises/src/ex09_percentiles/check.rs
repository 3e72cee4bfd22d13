//! The checker of exercise 9: hand-computed cases, then a real histogram — phase 3's
//! payment buckets in a `prometheus-client` registry, encoded as OpenMetrics and read
//! back with phase 3's own parser, exactly the path from `/metrics` to a dashboard.

use super::{Buckets, Percentiles};
use crate::{CheckRng, Failure, ensure};
use phase3_observability::scrape;
use phase3_observability::signals::PAYMENT_BUCKETS;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

const INF: f64 = f64::INFINITY;

pub fn check<P: Percentiles>() -> Result<(), Failure> {
    let p = P::new();
    hand_computed(&p)?;
    a_real_histogram(&p)?;
    windows(&p)
}

/// `0.3000`, `inf` or `None`: readable, unlike `Some(0.30000000000000004)`.
fn show(value: Option<f64>) -> String {
    value.map_or_else(|| "None".to_owned(), |v| format!("{v:.4}"))
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
        (None, None) => true,
        _ => false,
    }
}

fn hand_computed(p: &impl Percentiles) -> Result<(), Failure> {
    // 100 payments: 10 ≤ 0.1 s, 80 in (0.1, 0.5], 10 in (0.5, 1].
    let b: Buckets = vec![(0.1, 10.0), (0.5, 90.0), (1.0, 100.0), (INF, 100.0)];
    let cases = [
        (
            0.5,
            Some(0.1 + 0.4 * 40.0 / 80.0),
            "p50: rank 50 is the 40th of 80 in (0.1, 0.5]",
        ),
        (
            0.95,
            Some(0.5 + 0.5 * 5.0 / 10.0),
            "p95: rank 95 is the 5th of 10 in (0.5, 1]",
        ),
        (
            0.05,
            Some(0.1 * 5.0 / 10.0),
            "p5: rank 5 is in the first bucket, which starts at 0",
        ),
        (
            1.0,
            Some(1.0),
            "p100: the top of the last bucket that holds observations",
        ),
    ];
    for (q, expected, why) in cases {
        let got = p.quantile(q, &b);
        ensure(close(got, expected), || {
            format!(
                "quantile({q}) of buckets {b:?} must be {} ({why}; interpolate linearly \
                 inside the bucket), got {}",
                show(expected),
                show(got)
            )
        })?;
    }
    let slow: Buckets = vec![(0.1, 1.0), (0.5, 2.0), (1.0, 3.0), (INF, 100.0)];
    let got = p.quantile(0.99, &slow);
    ensure(close(got, Some(1.0)), || {
        format!(
            "97 of 100 observations are above the highest finite bound (1 s): p99 must be 1.0 (the \
             highest finite bound, as PromQL says; there is no upper bound to interpolate to), got \
             {}",
            show(got)
        )
    })?;
    let empty: Buckets = vec![(0.1, 0.0), (1.0, 0.0), (INF, 0.0)];
    let got = p.quantile(0.99, &empty);
    ensure(got.is_none(), || {
        format!("no observations at all: p99 must be None (no data, not 0 s), got {got:?}")
    })
}

/// `n` payment latencies: mostly 40–400 ms, a slow tail of 1.2–4 s.
fn latencies(rng: &mut CheckRng, n: usize, slow_share: f64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            if rng.fraction() < slow_share {
                1.2 + 2.8 * rng.fraction()
            } else {
                0.04 + 0.36 * rng.fraction() * rng.fraction()
            }
        })
        .collect()
}

/// The registry's payment histogram as a dashboard reads it: OpenMetrics text,
/// parsed by phase 3.
fn scraped(registry: &Registry) -> Buckets {
    let mut text = String::new();
    encode(&mut text, registry).expect("encoding into a String");
    scrape::parse(&text).histogram("payment_duration_seconds", &[])
}

fn payment_histogram() -> (Histogram, Registry) {
    let histogram = Histogram::new(PAYMENT_BUCKETS);
    let mut registry = Registry::default();
    registry.register(
        "payment_duration_seconds",
        "Time to charge",
        histogram.clone(),
    );
    (histogram, registry)
}

fn true_quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The bucket `(lower, upper]` that holds `value`.
fn bucket_of(value: f64) -> (f64, f64) {
    let mut lower = 0.0;
    for upper in PAYMENT_BUCKETS {
        if value <= upper {
            return (lower, upper);
        }
        lower = upper;
    }
    (lower, INF)
}

fn a_real_histogram(p: &impl Percentiles) -> Result<(), Failure> {
    let mut rng = CheckRng::new(9);
    let (histogram, registry) = payment_histogram();
    let values = latencies(&mut rng, 2_000, 0.03);
    for v in &values {
        histogram.observe(*v);
    }
    let buckets = scraped(&registry);
    for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
        let got = p.quantile(q, &buckets);
        let reference = scrape::quantile(q, &buckets);
        ensure(close(got, reference), || {
            format!(
                "2000 real observations in phase 3's payment buckets: p{} must be {} \
                 (PromQL's answer), got {}",
                q * 100.0,
                show(reference),
                show(got)
            )
        })?;
        let truth = true_quantile(&values, q);
        let (lower, upper) = bucket_of(truth);
        ensure(got.is_some_and(|v| v >= lower && v <= upper), || {
            format!(
                "p{}: the true value is {truth:.3} s, in the bucket ({lower}, {upper}]; the estimate \
                 {} is outside it",
                q * 100.0,
                show(got)
            )
        })?;
    }
    Ok(())
}

fn windows(p: &impl Percentiles) -> Result<(), Failure> {
    let mut rng = CheckRng::new(99);
    let (histogram, registry) = payment_histogram();
    // An hour of healthy payments, then a minute of a slowdown.
    for v in latencies(&mut rng, 5_000, 0.0) {
        histogram.observe(v);
    }
    let before = scraped(&registry);
    let slowdown = latencies(&mut rng, 100, 0.6);
    for v in &slowdown {
        histogram.observe(*v);
    }
    let after = scraped(&registry);
    let window = p.since(&before, &after);
    let lifetime_p99 = p.quantile(0.99, &after);
    let window_p99 = p.quantile(0.99, &window);
    let expected = scrape::quantile(0.99, &scraped_from(&slowdown));
    ensure(close(window_p99, expected), || {
        format!(
            "5000 healthy payments, then 100 during a slowdown: p99 over the window of those 100 \
             must be {}, got {} (lifetime p99: {} — the slowdown drowns in the hour before it; \
             that is why dashboards use windows)",
            show(expected),
            show(window_p99),
            show(lifetime_p99)
        )
    })?;
    // The process restarts: its counters start again from zero.
    let (histogram, registry) = payment_histogram();
    let fresh = latencies(&mut rng, 50, 0.5);
    for v in &fresh {
        histogram.observe(*v);
    }
    let restarted = scraped(&registry);
    let window = p.since(&after, &restarted);
    let count = window.last().map(|(_, c)| *c);
    ensure(
        count == Some(50.0) && window.windows(2).all(|w| w[0].1 <= w[1].1),
        || {
            format!(
                "the process restarted between two scrapes (5100 observations before, 50 after): \
                 the window holds the 50 new ones, as cumulative buckets; got {window:?}"
            )
        },
    )
}

fn scraped_from(values: &[f64]) -> Buckets {
    let (histogram, registry) = payment_histogram();
    for v in values {
        histogram.observe(*v);
    }
    scraped(&registry)
}
