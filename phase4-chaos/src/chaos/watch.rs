//! What a scenario measures besides the clients' answers: every second, the consumer
//! groups' lag and the payment provider's request count ([`Watch`]); after the run,
//! the retries each fault caused ([`retries`]) and how long the orders accepted
//! during a fault took to finish ([`finishing`]).

use super::Fault;
use common::payment::Simulator;
use phase2_events::flow::Topics;
use phase2_events::kafka::{LagProbe, messages_between, sample_all};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// One second of the run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Milliseconds from the start of the load.
    pub t_ms: u64,
    /// Messages published and not yet finished, over every consumer group (retry
    /// groups included); `None` when the broker did not answer in time.
    pub lag: Option<i64>,
    /// Charge requests the provider received so far.
    pub provider_requests: u64,
}

/// Samples every second until [`Watch::finish`].
#[derive(Debug)]
pub struct Watch {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: common::shutdown::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Starts sampling, `start` being the load's time zero; `lag` gets each reading
    /// (the dashboard's gauge).
    pub fn start(
        brokers: &str,
        topics: &Topics,
        provider: Simulator,
        start: Instant,
        lag: prometheus_client::metrics::gauge::Gauge,
    ) -> anyhow::Result<Watch> {
        let probes: Vec<LagProbe> = topics
            .subscriptions()
            .into_iter()
            .map(|(group, reads)| LagProbe::new(brokers, &group, reads))
            .collect::<anyhow::Result<_>>()?;
        let probes = Arc::new(probes);
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = common::shutdown::CancellationToken::new();
        let task = tokio::spawn({
            let (samples, stop) = (samples.clone(), stop.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let t_ms = start.elapsed().as_millis() as u64;
                    let provider_requests = provider.requests_received();
                    let probes = probes.clone();
                    let total = tokio::task::spawn_blocking(move || {
                        sample_all(&probes, Duration::from_millis(800))
                            .map(|groups| groups.iter().flatten().map(|p| p.lag()).sum::<i64>())
                    })
                    .await
                    .ok()
                    .and_then(Result::ok);
                    if let Some(total) = total {
                        lag.set(total);
                    }
                    samples.lock().expect("samples").push(Sample {
                        t_ms,
                        lag: total,
                        provider_requests,
                    });
                }
            }
        });
        Ok(Watch {
            samples,
            stop,
            task,
        })
    }

    /// Stops sampling; the samples, oldest first.
    pub async fn finish(self) -> Vec<Sample> {
        self.stop.cancel();
        let _ = self.task.await;
        std::mem::take(&mut *self.samples.lock().expect("samples"))
    }
}

/// The traffic of a window of the run — from a fault's start until `recovery_target`
/// after its end, or the steady state before the first fault: calls to the provider
/// against the charges it made, and events sent round the retry topics against the
/// events published. A fault's retries are what its window adds to the steady
/// state's (where the provider's 5 % transient failures are retried too).
#[derive(Debug, Clone, Serialize)]
pub struct Retries {
    /// The fault's name, or "steady state".
    pub fault: String,
    pub provider_requests: u64,
    /// Charges the provider recorded in the window (a replay or a transient failure
    /// records none).
    pub charges: u64,
    pub retried_events: i64,
    pub events: i64,
}

impl Retries {
    /// Provider calls per charge.
    pub fn calls_per_charge(&self) -> f64 {
        self.provider_requests as f64 / self.charges.max(1) as f64
    }

    /// Events through the retry topics, per event published.
    pub fn event_share(&self) -> f64 {
        self.retried_events as f64 / self.events.max(1) as f64
    }

    /// What this window's retries add to the traffic, against `steady`'s: provider
    /// calls per charge, and events, each as a share of the traffic.
    pub fn added(&self, steady: &Retries) -> (f64, f64) {
        let normal = steady.calls_per_charge().max(1.0);
        (
            self.calls_per_charge() / normal - 1.0,
            self.event_share() - steady.event_share(),
        )
    }
}

/// The provider's request count at `t_ms`, interpolated between the samples around
/// it (a window's edges fall between two samples a second apart; taking either one
/// would miscount by up to a second of calls).
fn requests_at(samples: &[Sample], t_ms: u64) -> f64 {
    let after = samples.iter().position(|s| s.t_ms >= t_ms);
    match after {
        None => samples.last().map_or(0.0, |s| s.provider_requests as f64),
        Some(0) => samples[0].provider_requests as f64,
        Some(i) => {
            let (a, b) = (&samples[i - 1], &samples[i]);
            let share = (t_ms - a.t_ms) as f64 / (b.t_ms - a.t_ms).max(1) as f64;
            a.provider_requests as f64
                + share * (b.provider_requests as f64 - a.provider_requests as f64)
        }
    }
}

/// [`Retries`] of the steady state, then of each fault. `started` is the load's time
/// zero on the wall clock.
pub async fn retries(
    faults: &[Fault],
    samples: &[Sample],
    recovery_target: Duration,
    started: chrono::DateTime<chrono::Utc>,
    brokers: &str,
    topics: &Topics,
    ledger: &common::payment::Ledger,
) -> anyhow::Result<Vec<Retries>> {
    let main: Vec<String> = topics.main().iter().map(|t| t.to_string()).collect();
    let retry: Vec<String> = main
        .iter()
        .map(|t| phase2_events::consumer::retry_topic(t))
        .collect();
    let mut out = Vec::new();
    let steady = (
        "steady state".to_owned(),
        1000,
        faults.first().map_or(u64::MAX, |f| f.at_ms),
    );
    let windows = faults.iter().map(|fault| {
        (
            fault.name(),
            fault.at_ms,
            fault.end_ms() + recovery_target.as_millis() as u64,
        )
    });
    for (name, from, to) in std::iter::once(steady).chain(windows) {
        let wall = |ms: u64| started + chrono::Duration::milliseconds(ms as i64);
        let (from_wall, to_wall) = (wall(from), wall(to));
        let charges = ledger
            .charges
            .iter()
            .filter(|c| c.created_at >= from_wall && c.created_at < to_wall)
            .count() as u64;
        let (brokers, main, retry) = (brokers.to_owned(), main.clone(), retry.clone());
        let (from_ms, to_ms) = (from_wall.timestamp_millis(), to_wall.timestamp_millis());
        let (events, retried_events) = tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(5);
            anyhow::Ok((
                messages_between(&brokers, &main, from_ms, to_ms, timeout)?,
                messages_between(&brokers, &retry, from_ms, to_ms, timeout)?,
            ))
        })
        .await??;
        out.push(Retries {
            fault: name,
            provider_requests: (requests_at(samples, to) - requests_at(samples, from))
                .round()
                .max(0.0) as u64,
            charges,
            retried_events,
            events,
        });
    }
    Ok(out)
}

/// How the orders accepted while a fault lasted finished.
#[derive(Debug, Clone, Serialize)]
pub struct Finishing {
    pub fault: String,
    pub orders: i64,
    /// Of those, not final when the books were read.
    pub unfinished: i64,
    /// From accepted to final, the slowest 1 % of the final ones.
    pub p99_s: Option<f64>,
}

/// [`Finishing`] of each fault the platform is built to absorb.
pub async fn finishing(
    faults: &[Fault],
    started: chrono::DateTime<chrono::Utc>,
    orders_db: &sqlx::AnyPool,
) -> anyhow::Result<Vec<Finishing>> {
    let mut out = Vec::new();
    for fault in faults.iter().filter(|f| f.absorbed) {
        let wall =
            |ms: u64| common::db::timestamp(started + chrono::Duration::milliseconds(ms as i64));
        let (orders, unfinished, p99_s): (i64, i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), \
                    count(*) FILTER (WHERE status NOT IN ('delivered', 'cancelled')), \
                    CAST(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM \
                        (updated_at::timestamptz - created_at::timestamptz))) \
                        FILTER (WHERE status IN ('delivered', 'cancelled')) AS DOUBLE PRECISION) \
             FROM orders WHERE created_at >= $1 AND created_at < $2",
        )
        .bind(wall(fault.at_ms))
        .bind(wall(fault.end_ms()))
        .fetch_one(orders_db)
        .await?;
        out.push(Finishing {
            fault: fault.name(),
            orders,
            unfinished,
            p99_s,
        });
    }
    Ok(out)
}
