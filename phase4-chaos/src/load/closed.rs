//! A closed-loop HTTP load generator: N workers, each sending its next request as
//! soon as the previous answer arrived.
//!
//! *Closed loop* means the offered load adapts to the server: when it slows down,
//! the workers send less. That answers "how many requests per second can this
//! server complete with N requests in flight?" — the question a benchmark beside
//! pgbench (also closed-loop, `-c N`) asks. It does **not** tell what users of a
//! slow server would see: a stalled server also stalls the clock of every request
//! that would have arrived meanwhile ("coordinated omission"). [`super::open`]
//! uses an open model (a constant arrival rate) for that question.
//!
//! Latencies go into an HDR histogram (microseconds, 3 significant digits): exact
//! enough for p99 and max, in constant memory, and mergeable across workers.
//! The first `warmup` of traffic (connection set-up, cold caches and database
//! pages) is sent but not recorded.

use anyhow::Context;
use hdrhistogram::Histogram;
use reqwest::header::CONTENT_TYPE;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Load {
    /// Full URL; always on 127.0.0.1 (see [`crate::bench`]).
    pub url: String,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// The JSON body worker `n` sends.
    pub body: fn(usize) -> String,
}

#[derive(Debug)]
pub struct Report {
    /// Latency of every request answered (with any status) in the measured window,
    /// in microseconds.
    pub latency_us: Histogram<u64>,
    /// 2xx answers in the measured window.
    pub ok: u64,
    /// Non-2xx answers and failed requests (connection errors, timeouts).
    pub errors: u64,
    /// From the end of the warm-up to the last answer.
    pub elapsed: Duration,
    /// The first error seen, to show what went wrong.
    pub first_error: Option<String>,
}

/// Longest a single request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn closed_loop(load: &Load) -> anyhow::Result<Report> {
    let client = reqwest::Client::builder()
        // Only local traffic: never route through an HTTP(S)_PROXY from the environment.
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(load.concurrency)
        .build()
        .context("building the HTTP client")?;
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let end = measure_from + load.duration;

    let mut workers = tokio::task::JoinSet::new();
    for n in 0..load.concurrency {
        let client = client.clone();
        let url = load.url.clone();
        let body = (load.body)(n);
        workers.spawn(async move {
            let mut report = Report {
                latency_us: super::histogram(),
                ok: 0,
                errors: 0,
                elapsed: Duration::ZERO,
                first_error: None,
            };
            let mut last_answer = measure_from;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let result = client
                    .post(&url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                // `Some(error)` unless a 2xx; `answered` when any HTTP status came back.
                let (answered, error) = match result {
                    Ok(response) => {
                        let status = response.status();
                        // Read the whole body, so the connection can be reused.
                        let text = response.text().await.unwrap_or_default();
                        let error = (!status.is_success())
                            .then(|| format!("{status}: {}", super::truncate(&text, 300)));
                        (true, error)
                    }
                    Err(err) if err.is_timeout() => {
                        (false, Some(format!("no answer within {REQUEST_TIMEOUT:?}")))
                    }
                    Err(err) => (false, Some(format!("{err:#}"))),
                };
                let now = Instant::now();
                if sent < measure_from {
                    continue; // warm-up: sent, not recorded
                }
                last_answer = now;
                if answered {
                    let micros = u64::try_from((now - sent).as_micros()).unwrap_or(u64::MAX);
                    report.latency_us.saturating_record(micros);
                }
                match error {
                    None => report.ok += 1,
                    Some(error) => {
                        report.errors += 1;
                        report.first_error.get_or_insert(error);
                    }
                }
            }
            report.elapsed = last_answer.saturating_duration_since(measure_from);
            report
        });
    }

    let mut total = Report {
        latency_us: super::histogram(),
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        first_error: None,
    };
    while let Some(worker) = workers.join_next().await {
        let report = worker.context("a load worker panicked")?;
        total.latency_us.add(&report.latency_us)?;
        total.ok += report.ok;
        total.errors += report.errors;
        total.elapsed = total.elapsed.max(report.elapsed);
        total.first_error = total.first_error.or(report.first_error);
    }
    // A run with no answers at all has no meaningful window; use the nominal one.
    if total.elapsed.is_zero() {
        total.elapsed = load.duration;
    }
    Ok(total)
}
