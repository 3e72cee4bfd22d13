//! An open-model HTTP load generator: requests *arrive* at a fixed rate, whether or
//! not the earlier ones were answered.
//!
//! The closed loop of [`super::closed`] answers "how much can the server do with N
//! requests in flight?". Users do not wait politely for each other, though: at 50
//! orders a second, the 51st customer presses the button whether or not the server
//! is stuck on the 50th. Here request `i` is *due* at `start + i / rate`, and its
//! latency is measured from that due time, not from when it was actually sent. A
//! server that stalls for a second therefore shows a second of extra latency on
//! every request due during the stall — instead of hiding it, as a closed loop
//! does, by not sending them ("coordinated omission").
//!
//! The generator still bounds what it has in flight (`max_in_flight`): when that many
//! requests are unanswered, the next one is sent as soon as a slot is free, late —
//! and its lateness counts in its latency. Requests that could not be sent before the
//! end of the run are counted as `not_sent`.

use anyhow::Context;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct OpenLoad {
    /// Full URL; always on 127.0.0.1.
    pub url: String,
    /// Requests per second.
    pub rate: f64,
    /// How long requests keep arriving.
    pub duration: Duration,
    /// Unanswered requests allowed at once.
    pub max_in_flight: usize,
    /// The JSON body of request `n`.
    pub body: fn(u64) -> String,
    /// A new connection for every request (no keep-alive): each request is routed
    /// afresh by a connection-level balancer (a Kubernetes Service), as a client
    /// that reconnects would be.
    pub fresh_connections: bool,
}

/// One request: when it was due, when it ended, and how.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub due: Instant,
    pub done: Instant,
    /// A 2xx answer, or what went wrong (another status, a timeout, a refused
    /// connection).
    pub result: Result<Answer, String>,
}

/// A 2xx answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The `Location` header, if any (where the new resource lives).
    pub location: Option<String>,
}

impl Outcome {
    /// From due time to the end of the answer (or the failure).
    pub fn latency(&self) -> Duration {
        self.done.saturating_duration_since(self.due)
    }

    pub fn is_success(&self) -> bool {
        self.result.is_ok()
    }
}

#[derive(Debug)]
pub struct OpenReport {
    /// When request 0 was due.
    pub start: Instant,
    /// Every request sent, in no particular order.
    pub outcomes: Vec<Outcome>,
    /// Requests due before the end that found no free slot in time.
    pub not_sent: u64,
}

/// Longest a single request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn open_loop(load: &OpenLoad) -> anyhow::Result<OpenReport> {
    anyhow::ensure!(load.rate > 0.0, "the arrival rate must be positive");
    let client = reqwest::Client::builder()
        // Only local traffic: never route through an HTTP(S)_PROXY from the environment.
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(if load.fresh_connections {
            0
        } else {
            load.max_in_flight
        })
        .build()
        .context("building the HTTP client")?;
    let slots = Arc::new(Semaphore::new(load.max_in_flight));
    let total = (load.rate * load.duration.as_secs_f64()).round() as u64;
    let gap = Duration::from_secs_f64(1.0 / load.rate);
    // A little ahead, so request 0 is not already late when the loop starts.
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + load.duration;

    let mut requests = tokio::task::JoinSet::new();
    let mut not_sent = 0;
    for n in 0..total {
        let due = start + gap.mul_f64(n as f64);
        tokio::time::sleep_until(due).await;
        let slot = match tokio::time::timeout_at(end, slots.clone().acquire_owned()).await {
            Ok(slot) => slot.context("the in-flight semaphore closed")?,
            Err(_) => {
                not_sent = total - n;
                break;
            }
        };
        let request = client
            .post(&load.url)
            .header(CONTENT_TYPE, "application/json")
            .body((load.body)(n));
        requests.spawn(async move {
            let result = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let location = response
                        .headers()
                        .get(LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    // Read the whole body, so the connection can be reused.
                    let text = response.text().await.unwrap_or_default();
                    if (200..300).contains(&status) {
                        Ok(Answer { location })
                    } else {
                        Err(format!("{status}: {}", super::truncate(&text, 300)))
                    }
                }
                Err(err) if err.is_timeout() => {
                    Err(format!("no answer within {REQUEST_TIMEOUT:?}"))
                }
                Err(err) => Err(format!("{err:#}")),
            };
            drop(slot);
            Outcome {
                due,
                done: Instant::now(),
                result,
            }
        });
    }
    let mut outcomes = Vec::with_capacity(total as usize);
    while let Some(outcome) = requests.join_next().await {
        outcomes.push(outcome.context("a request task panicked")?);
    }
    Ok(OpenReport {
        start,
        outcomes,
        not_sent,
    })
}
