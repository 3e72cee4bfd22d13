//! `phase4-chaos load`: the request mix of [`super::mix`] against the gateway, in an
//! open model (constant or ramping arrival rate) or a closed one, with k6-style
//! thresholds deciding the exit status.
//!
//! * **Latency from the intended start.** In the open model request `n` is due at a
//!   planned moment; its latency runs from then, so a stalled server shows its
//!   stall on every request due during it (no coordinated omission).
//! * **Dropped, not delayed.** When `--max-in-flight` requests are unanswered, a due
//!   request is *dropped* and counted (`dropped`, k6's `dropped_iterations`): the
//!   generator says that it could not offer the load, instead of quietly offering
//!   less.
//! * **Classes of answer.** `ok` (2xx), `refused` (429 and 503: the platform saying
//!   no on purpose, with `Retry-After`), `client_error` (other 4xx), `server_error`
//!   (other 5xx), `failed` (no answer: timeout, refused connection). `errors` in a
//!   threshold counts the last three.

use super::mix::{Endpoint, Mix, Plan, Planned};
use crate::gateway::auth::{DEVELOPMENT_KEY, Keys};
use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The gateway (only 127.0.0.1 or localhost: load is never sent elsewhere).
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// Open: requests arrive at a rate. Closed: `--vus` customers, each waiting for
    /// its answer before its next request.
    #[arg(long, value_enum, default_value_t = Model::Open)]
    pub model: Model,
    /// Open model: arrivals per second (the start rate when there are stages).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Open model: ramp the rate linearly to RATE over DURATION, e.g.
    /// `--stage 500:30s --stage 500:60s --stage 0:10s` (k6's ramping-arrival-rate).
    /// Without stages, `--rate` holds for `--duration`.
    #[arg(long = "stage", value_parser = parse_stage)]
    pub stages: Vec<Stage>,
    /// How long (without stages; with them, their durations add up).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Closed model: virtual customers sending at once.
    #[arg(long, default_value_t = 50)]
    pub vus: usize,
    /// Distinct customers (each with a token of its own).
    #[arg(long, default_value_t = 200)]
    pub customers: usize,
    /// Weights of the endpoints.
    #[arg(long, default_value = "menu=30,place=40,status=25,duplicate=5")]
    pub mix: Mix,
    /// Seed of every random choice (customers, items, keys, endpoints); the same
    /// seed repeats a run's requests. Default: a random one, printed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// A threshold that must hold, e.g. `p99<200ms`, `p95<500ms`, `errors<0.1%`,
    /// `refused<5%`, `dropped<0.1%`; per endpoint: `place:p99<300ms`. Exit status 99
    /// when one fails (as k6).
    #[arg(long = "slo")]
    pub slos: Vec<Slo>,
    /// Write the report as JSON too.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Requests unanswered at once; a due request beyond it is dropped (counted).
    #[arg(long, default_value_t = 2048)]
    pub max_in_flight: usize,
    /// Longest a request may take before it counts as failed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The key the gateway checks tokens with.
    #[arg(long, env = "GATEWAY_JWT_KEY", default_value = DEVELOPMENT_KEY, hide_default_value = true)]
    pub jwt_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    Open,
    Closed,
}

/// Ramp to `rate` over `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stage {
    pub rate: f64,
    #[serde(with = "secs")]
    pub duration: Duration,
}

/// A duration as seconds (a float) in the JSON reports.
pub(crate) mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

fn parse_stage(text: &str) -> Result<Stage, String> {
    let (rate, duration) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}`: expected RATE:DURATION, e.g. 500:30s"))?;
    let rate: f64 = rate
        .parse()
        .ok()
        .filter(|r: &f64| r.is_finite() && *r >= 0.0)
        .ok_or_else(|| format!("`{rate}`: a rate ≥ 0"))?;
    let duration = humantime::parse_duration(duration).map_err(|e| format!("`{duration}`: {e}"))?;
    Ok(Stage { rate, duration })
}

/// The arrival schedule of the open model: rate as a function of time.
#[derive(Debug, Clone)]
pub struct Schedule {
    start_rate: f64,
    stages: Vec<Stage>,
}

impl Schedule {
    pub fn new(args: &LoadArgs) -> Schedule {
        let stages = if args.stages.is_empty() {
            vec![Stage {
                rate: args.rate,
                duration: args.duration,
            }]
        } else {
            args.stages.clone()
        };
        Schedule {
            start_rate: args.rate,
            stages,
        }
    }

    pub fn duration(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// The arrival rate `at` into the run.
    pub fn rate_at(&self, at: Duration) -> f64 {
        let mut from = self.start_rate;
        let mut begin = Duration::ZERO;
        for stage in &self.stages {
            let end = begin + stage.duration;
            if at < end {
                let progress = (at - begin).as_secs_f64() / stage.duration.as_secs_f64().max(1e-9);
                return from + (stage.rate - from) * progress;
            }
            from = stage.rate;
            begin = end;
        }
        from
    }

    /// When each request is due, from the start of the run: request `n` at the moment
    /// the expected count (the rate integrated over time, in 1 ms steps) reaches
    /// `n`. Stepping by `1 / rate` instead would leap over a ramp that starts at 0.
    pub fn arrivals(&self) -> Vec<Duration> {
        const STEP: Duration = Duration::from_millis(1);
        let total = self.duration();
        let mut due = Vec::new();
        let mut expected = 0.0_f64;
        let mut at = Duration::ZERO;
        while at < total {
            let rate = self.rate_at(at);
            let next = expected + rate * STEP.as_secs_f64();
            while (due.len() as f64) < next - 1e-9 {
                // Where in this step the count crosses the next whole request.
                let fraction = ((due.len() as f64 - expected) / (next - expected)).clamp(0.0, 1.0);
                due.push(at + STEP.mul_f64(fraction));
            }
            expected = next;
            at += STEP;
        }
        due
    }
}

/// How an answer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Ok,
    Refused,
    ClientError,
    ServerError,
    Failed,
}

impl Class {
    pub fn of_status(status: u16) -> Class {
        match status {
            200..=299 => Class::Ok,
            429 | 503 => Class::Refused,
            400..=499 => Class::ClientError,
            _ => Class::ServerError,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub sent: u64,
    pub ok: u64,
    pub refused: u64,
    pub client_error: u64,
    pub server_error: u64,
    pub failed: u64,
}

impl Counts {
    fn add(&mut self, class: Class) {
        self.sent += 1;
        match class {
            Class::Ok => self.ok += 1,
            Class::Refused => self.refused += 1,
            Class::ClientError => self.client_error += 1,
            Class::ServerError => self.server_error += 1,
            Class::Failed => self.failed += 1,
        }
    }

    pub fn errors(&self) -> u64 {
        self.client_error + self.server_error + self.failed
    }
}

/// HDR percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        let at = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: histogram.max() as f64 / 1000.0,
        }
    }

    fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "p50" => self.p50_ms,
            "p90" => self.p90_ms,
            "p95" => self.p95_ms,
            "p99" => self.p99_ms,
            "p999" => self.p999_ms,
            "max" => self.max_ms,
            _ => return None,
        })
    }
}

/// A threshold: `[ENDPOINT:]METRIC<VALUE`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slo {
    pub text: String,
    endpoint: Option<Endpoint>,
    metric: String,
    /// Milliseconds for latencies, a fraction for rates.
    limit: f64,
}

impl std::str::FromStr for Slo {
    type Err = String;

    fn from_str(text: &str) -> Result<Slo, String> {
        let (left, value) = text.split_once('<').ok_or_else(|| {
            format!("`{text}`: expected METRIC<VALUE, e.g. p99<200ms or errors<0.1%")
        })?;
        let (endpoint, metric) = match left.split_once(':') {
            Some((endpoint, metric)) => (
                Some(
                    Endpoint::ALL
                        .into_iter()
                        .find(|e| e.name() == endpoint)
                        .ok_or_else(|| {
                            format!("`{endpoint}`: one of menu, place, status, duplicate")
                        })?,
                ),
                metric,
            ),
            None => (None, left),
        };
        let metric = metric.trim().to_owned();
        let value = value.trim();
        let limit = match metric.as_str() {
            "p50" | "p90" | "p95" | "p99" | "p999" | "max" => {
                humantime::parse_duration(value)
                    .map_err(|e| format!("`{value}`: a duration such as 200ms ({e})"))?
                    .as_secs_f64()
                    * 1000.0
            }
            "errors" | "refused" | "dropped" => {
                let percent = value
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse::<f64>().ok())
                    .ok_or_else(|| format!("`{value}`: a percentage such as 0.1%"))?;
                percent / 100.0
            }
            other => {
                return Err(format!(
                    "`{other}`: one of p50, p90, p95, p99, p999, max, errors, refused, dropped"
                ));
            }
        };
        Ok(Slo {
            text: text.to_owned(),
            endpoint,
            metric,
            limit,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SloResult {
    pub slo: String,
    pub value: f64,
    pub pass: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    pub endpoint: Endpoint,
    pub counts: Counts,
    pub latency: Latency,
}

/// One second of the run (by when requests were due).
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub t: u64,
    pub counts: Counts,
    pub p99_ms: f64,
    /// The reads' (menu, status) p99 alone.
    pub reads_p99_ms: f64,
}

/// One order request (a place or a duplicate submit) and what its client was told:
/// a chaos scenario's checker holds the books to these.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Placement {
    /// Its `Idempotency-Key`.
    pub key: String,
    pub class: Class,
    /// The order the answer named (from `Location`, on a 2xx).
    pub order_id: Option<String>,
    /// When it was due, in milliseconds from the run's start.
    pub at_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub url: String,
    pub model: Model,
    pub seed: u64,
    pub mix: Mix,
    pub customers: usize,
    pub stages: Vec<Stage>,
    pub duration_s: f64,
    /// Requests the schedule offered (open) or sent (closed), per second.
    pub offered_per_s: f64,
    /// Answers (any class) per second.
    pub achieved_per_s: f64,
    /// 2xx per second.
    pub goodput_per_s: f64,
    pub dropped: u64,
    pub totals: Counts,
    pub latency: Latency,
    pub endpoints: Vec<EndpointReport>,
    pub seconds: Vec<Second>,
    pub first_errors: Vec<String>,
    pub slos: Vec<SloResult>,
    pub passed: bool,
    /// Every order request and its answer (not in the JSON report: one line each).
    #[serde(skip)]
    pub placements: Vec<Placement>,
}

#[derive(Debug)]
struct Recorder {
    all: Histogram<u64>,
    totals: Counts,
    endpoints: BTreeMap<Endpoint, (Counts, Histogram<u64>)>,
    /// Each second: every request, and the reads alone.
    seconds: Vec<(Counts, Histogram<u64>, Histogram<u64>)>,
    first_errors: Vec<String>,
    placements: Vec<Placement>,
}

impl Recorder {
    fn new(seconds: usize) -> Recorder {
        Recorder {
            all: super::histogram(),
            totals: Counts::default(),
            endpoints: BTreeMap::new(),
            seconds: (0..seconds)
                .map(|_| (Counts::default(), super::histogram(), super::histogram()))
                .collect(),
            first_errors: Vec::new(),
            placements: Vec::new(),
        }
    }

    fn record(
        &mut self,
        endpoint: Endpoint,
        second: usize,
        latency: Duration,
        class: Class,
        error: Option<String>,
    ) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.all.saturating_record(us);
        self.totals.add(class);
        let (counts, histogram) = self
            .endpoints
            .entry(endpoint)
            .or_insert_with(|| (Counts::default(), super::histogram()));
        counts.add(class);
        histogram.saturating_record(us);
        if let Some((counts, histogram, reads)) = self.seconds.get_mut(second) {
            counts.add(class);
            histogram.saturating_record(us);
            if !endpoint.is_write() {
                reads.saturating_record(us);
            }
        }
        if let Some(error) = error
            && self.first_errors.len() < 5
        {
            self.first_errors.push(error);
        }
    }
}

/// Sends one planned request; returns its class and, for errors, what happened.
async fn send(
    client: &reqwest::Client,
    base: &str,
    tokens: &[String],
    planned: &Planned,
    plan: &Plan,
) -> (Class, Option<String>, Option<String>) {
    let url = format!("{base}{}", planned.path);
    let mut request = match &planned.order {
        Some((body, key)) => client
            .post(&url)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body.clone()),
        None => client.get(&url),
    };
    // Signed-in customers: the menu too, so that it counts against the customer's
    // limit, not against 127.0.0.1's (where every virtual customer comes from).
    request = request.bearer_auth(&tokens[planned.customer]);
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response.text().await.unwrap_or_default();
            let class = Class::of_status(status);
            if class == Class::Ok
                && planned.endpoint == Endpoint::Place
                && let Some(location) = &location
            {
                plan.placed(planned.customer, location.clone());
            }
            let error = matches!(class, Class::ClientError | Class::ServerError).then(|| {
                format!(
                    "{} {}: {status} {}",
                    planned.endpoint.name(),
                    planned.path,
                    body.chars().take(200).collect::<String>()
                )
            });
            (class, error, location.filter(|_| class == Class::Ok))
        }
        Err(err) => (
            Class::Failed,
            Some(format!(
                "{} {}: {err:#}",
                planned.endpoint.name(),
                planned.path
            )),
            None,
        ),
    }
}

/// What every request task needs.
#[derive(Debug, Clone)]
struct Shared {
    client: reqwest::Client,
    base: String,
    tokens: Arc<Vec<String>>,
    plan: Arc<Plan>,
    recorder: Arc<Mutex<Recorder>>,
    /// When the run started (the first request's due time).
    start: Instant,
}

impl Shared {
    /// Plans, sends and records one request; its latency runs from `since` (the due
    /// time in the open model, the send time in the closed one).
    async fn one(&self, since: Instant, second: usize) {
        let planned = self.plan.next();
        let (class, error, location) =
            send(&self.client, &self.base, &self.tokens, &planned, &self.plan).await;
        let mut recorder = self.recorder.lock().expect("recorder");
        recorder.record(planned.endpoint, second, since.elapsed(), class, error);
        if let Some((_, key)) = &planned.order {
            let at_ms = since.saturating_duration_since(self.start).as_millis() as u64;
            recorder.placements.push(Placement {
                key: key.clone(),
                class,
                order_id: location.and_then(|l| l.rsplit('/').next().map(str::to_owned)),
                at_ms,
            });
        }
    }
}

/// Refuses anything but the local machine.
fn check_local(url: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("`{url}` is not a URL"))?;
    let host = parsed.host_str().unwrap_or_default();
    anyhow::ensure!(
        matches!(host, "127.0.0.1" | "localhost" | "[::1]"),
        "load is only ever sent to this machine (127.0.0.1 or localhost), not to {host}"
    );
    Ok(url.trim_end_matches('/').to_owned())
}

/// Runs the load and judges the thresholds.
pub async fn run(args: &LoadArgs) -> anyhow::Result<LoadReport> {
    let base = check_local(&args.url)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let plan = Arc::new(Plan::new(
        args.mix.clone(),
        args.customers,
        seed,
        *uuid::Uuid::now_v7().as_bytes(),
    ));
    let keys = Keys::hs256(args.jwt_key.as_bytes())?;
    let schedule = Schedule::new(args);
    let duration = match args.model {
        Model::Open => schedule.duration(),
        Model::Closed => args.duration,
    };
    let lifetime = duration + Duration::from_secs(600);
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..args.customers.max(1))
            .map(|i| keys.mint(&super::mix::customer_name(i), lifetime))
            .collect::<anyhow::Result<_>>()?,
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(args.timeout)
        .pool_max_idle_per_host(args.max_in_flight.min(1024))
        .build()?;
    let seconds = duration.as_secs() as usize + 1;
    let recorder = Arc::new(Mutex::new(Recorder::new(seconds)));
    let start = Instant::now() + Duration::from_millis(50);
    let mut dropped = 0u64;
    let mut offered = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    let shared = Shared {
        client,
        base: base.clone(),
        tokens,
        plan,
        recorder: recorder.clone(),
        start,
    };

    match args.model {
        Model::Open => {
            let slots = Arc::new(Semaphore::new(args.max_in_flight));
            for at in schedule.arrivals() {
                let due = start + at;
                tokio::time::sleep_until(due).await;
                offered += 1;
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    dropped += 1;
                    continue;
                };
                let shared = shared.clone();
                tasks.spawn(async move {
                    shared.one(due, at.as_secs() as usize).await;
                    drop(slot);
                });
            }
        }
        Model::Closed => {
            let end = start + duration;
            for _ in 0..args.vus {
                let shared = shared.clone();
                tasks.spawn(async move {
                    tokio::time::sleep_until(start).await;
                    while Instant::now() < end {
                        let sent = Instant::now();
                        shared
                            .one(
                                sent,
                                sent.saturating_duration_since(start).as_secs() as usize,
                            )
                            .await;
                    }
                });
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a request task panicked")?;
    }
    drop(shared);
    let recorder = Arc::try_unwrap(recorder)
        .map_err(|_| anyhow::anyhow!("requests still running"))?
        .into_inner()
        .expect("recorder");
    let elapsed = duration.as_secs_f64().max(1e-9);
    if args.model == Model::Closed {
        offered = recorder.totals.sent;
    }
    let mut report = LoadReport {
        url: base,
        model: args.model,
        seed,
        mix: args.mix.clone(),
        customers: args.customers,
        stages: schedule.stages.clone(),
        duration_s: duration.as_secs_f64(),
        offered_per_s: offered as f64 / elapsed,
        achieved_per_s: recorder.totals.sent as f64 / elapsed,
        goodput_per_s: recorder.totals.ok as f64 / elapsed,
        dropped,
        totals: recorder.totals,
        latency: Latency::of(&recorder.all),
        endpoints: recorder
            .endpoints
            .iter()
            .map(|(endpoint, (counts, histogram))| EndpointReport {
                endpoint: *endpoint,
                counts: *counts,
                latency: Latency::of(histogram),
            })
            .collect(),
        seconds: recorder
            .seconds
            .iter()
            .enumerate()
            .filter(|(_, (counts, ..))| counts.sent > 0)
            .map(|(t, (counts, histogram, reads))| Second {
                t: t as u64,
                counts: *counts,
                p99_ms: Latency::of(histogram).p99_ms,
                reads_p99_ms: Latency::of(reads).p99_ms,
            })
            .collect(),
        first_errors: recorder.first_errors,
        slos: Vec::new(),
        passed: true,
        placements: recorder.placements,
    };
    report.slos = args
        .slos
        .iter()
        .map(|slo| judge(slo, &report, offered))
        .collect();
    report.passed = report.slos.iter().all(|r| r.pass);
    Ok(report)
}

fn judge(slo: &Slo, report: &LoadReport, offered: u64) -> SloResult {
    let (counts, latency) = match slo.endpoint {
        Some(endpoint) => report
            .endpoints
            .iter()
            .find(|e| e.endpoint == endpoint)
            .map_or((Counts::default(), Latency::default()), |e| {
                (e.counts, e.latency)
            }),
        None => (report.totals, report.latency),
    };
    let share = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
    let value = match slo.metric.as_str() {
        "errors" => share(counts.errors(), counts.sent),
        "refused" => share(counts.refused, counts.sent),
        "dropped" => share(report.dropped, offered),
        metric => latency.get(metric).unwrap_or(f64::NAN),
    };
    // A threshold on requests that never happened does not pass by default.
    let measured = counts.sent > 0 || slo.metric == "dropped";
    SloResult {
        slo: slo.text.clone(),
        value,
        pass: measured && value < slo.limit,
    }
}

/// The report as a table.
pub fn print(report: &LoadReport) {
    println!(
        "\n{} model, {:.0} s, seed {}, {} customers — offered {:.1}/s, answered {:.1}/s, 2xx {:.1}/s, dropped {}",
        match report.model {
            Model::Open => "open",
            Model::Closed => "closed",
        },
        report.duration_s,
        report.seed,
        report.customers,
        report.offered_per_s,
        report.achieved_per_s,
        report.goodput_per_s,
        report.dropped
    );
    println!(
        "\n{:<10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "endpoint",
        "sent",
        "2xx",
        "429/503",
        "4xx",
        "5xx",
        "failed",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms"
    );
    let row = |name: &str, c: &Counts, l: &Latency| {
        println!(
            "{:<10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            name,
            c.sent,
            c.ok,
            c.refused,
            c.client_error,
            c.server_error,
            c.failed,
            l.p50_ms,
            l.p95_ms,
            l.p99_ms,
            l.max_ms
        );
    };
    for e in &report.endpoints {
        row(e.endpoint.name(), &e.counts, &e.latency);
    }
    row("all", &report.totals, &report.latency);
    println!("\nsecond    sent     2xx  429/503  errors   p99 ms");
    for s in &report.seconds {
        println!(
            "{:>6} {:>7} {:>7} {:>8} {:>7} {:>8.1}",
            s.t,
            s.counts.sent,
            s.counts.ok,
            s.counts.refused,
            s.counts.errors(),
            s.p99_ms
        );
    }
    for error in &report.first_errors {
        println!("error: {error}");
    }
    if !report.slos.is_empty() {
        println!();
        for r in &report.slos {
            println!(
                "{} {:<22} measured {:.4}",
                if r.pass { "✓" } else { "✗" },
                r.slo,
                r.value
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(argv: &[&str]) -> LoadArgs {
        crate::parse_flags(argv).unwrap()
    }

    #[test]
    fn a_constant_rate_arrives_evenly() {
        let schedule = Schedule::new(&args(&["--rate", "100", "--duration", "2s"]));
        let arrivals = schedule.arrivals();
        assert_eq!(arrivals.len(), 200);
        assert_eq!(arrivals[1] - arrivals[0], Duration::from_millis(10));
    }

    #[test]
    fn stages_ramp_linearly_from_the_start_rate() {
        let schedule = Schedule::new(&args(&[
            "--rate", "0", "--stage", "100:10s", "--stage", "100:5s",
        ]));
        assert_eq!(schedule.duration(), Duration::from_secs(15));
        assert!((schedule.rate_at(Duration::from_secs(5)) - 50.0).abs() < 1e-9);
        assert!((schedule.rate_at(Duration::from_secs(12)) - 100.0).abs() < 1e-9);
        // The ramp offers half of 100/s × 10 s, then 100/s × 5 s.
        let offered = schedule.arrivals().len();
        assert!((990..=1010).contains(&offered), "{offered}");
    }

    #[test]
    fn thresholds_parse_and_judge_like_k6() {
        let slo: Slo = "p99<200ms".parse().unwrap();
        assert_eq!(slo.limit, 200.0);
        let errors: Slo = "errors<0.1%".parse().unwrap();
        assert!((errors.limit - 0.001).abs() < 1e-12);
        let per_endpoint: Slo = "place:p95<1s".parse().unwrap();
        assert_eq!(per_endpoint.endpoint, Some(Endpoint::Place));
        assert!("p42<1s".parse::<Slo>().is_err());
        assert!("errors<1".parse::<Slo>().is_err());
        assert!("p99>1s".parse::<Slo>().is_err());

        let mut report = empty_report();
        report.totals = Counts {
            sent: 1000,
            ok: 990,
            refused: 5,
            client_error: 0,
            server_error: 3,
            failed: 2,
        };
        report.latency.p99_ms = 150.0;
        assert!(judge(&slo, &report, 1000).pass, "150 ms < 200 ms");
        let judged = judge(&errors, &report, 1000);
        assert!(!judged.pass, "5 errors in 1000 is 0.5 %");
        assert!((judged.value - 0.005).abs() < 1e-12);
        assert!(
            !judge(&per_endpoint, &report, 1000).pass,
            "no place requests: not passed"
        );
    }

    #[test]
    fn load_goes_only_to_this_machine() {
        assert!(check_local("http://127.0.0.1:3000").is_ok());
        assert!(check_local("http://localhost:3000/").is_ok());
        assert!(check_local("http://example.com").is_err());
    }

    fn empty_report() -> LoadReport {
        LoadReport {
            url: String::new(),
            model: Model::Open,
            seed: 0,
            mix: Mix::default(),
            customers: 1,
            stages: Vec::new(),
            duration_s: 1.0,
            offered_per_s: 0.0,
            achieved_per_s: 0.0,
            goodput_per_s: 0.0,
            dropped: 0,
            totals: Counts::default(),
            latency: Latency::default(),
            endpoints: Vec::new(),
            seconds: Vec::new(),
            first_errors: Vec::new(),
            slos: Vec::new(),
            passed: true,
            placements: Vec::new(),
        }
    }
}
