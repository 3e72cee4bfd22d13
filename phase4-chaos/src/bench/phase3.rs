//! `cargo xtask bench phase3`: what phase 3's instrumentation costs — the phase 2
//! system and the phase 3 system measured on the same run, one after the other.
//!
//! `phase3-observability all` is phase 2's services, built by phase 2's own code, with
//! phase 3 around them: a span for every request, message and relay batch (turned
//! into OpenTelemetry traces *and* into metrics by a span→metrics layer), HTTP
//! metrics on the routers, probes that sample lag, dead letters and outboxes every
//! `--probe-interval`, JSON logs with trace ids, fault proxies (idle) in front of the
//! provider and Redis, and an ops server with `/metrics`. Nothing else differs, so
//! the difference between the two is the price of being observable.
//!
//! 1. Builds both release binaries.
//! 2. Runs **rounds**; each runs both systems, in the order phase 2, phase 3 in odd
//!    rounds and phase 3, phase 2 in even ones (ABBA): a drift that grows steadily
//!    during the benchmark (a warming or throttling machine, PostgreSQL's own
//!    bookkeeping) then costs both systems the same.
//! 3. Every run starts from the same place: fresh databases and a topic namespace of
//!    its own (deleted after the run) on the broker `cargo xtask up` runs.
//! 4. Each run is phase 2's benchmark, shortened ([`phase2`]'s functions):
//!    priming, a **saturation run** (closed loop, `--saturation-in-flight` orders in
//!    the system: the sustained orders/s, and CPU use per program), then a **latency
//!    run** (open model) at one arrival rate for every run — `--latency-rate`, or half
//!    the sustained rate of the first run — for API and end-to-end percentiles.
//! 5. Phase 3 runs as a learner runs it: all instrumentation on, its `/metrics`
//!    scraped every `--scrape-interval` as Prometheus would, and traces created but
//!    not exported (no `OTEL_EXPORTER_OTLP_ENDPOINT`). With `--otlp-sink` they are
//!    exported to a small OTLP/HTTP receiver in this process ([`OtlpSink`], which
//!    answers 200 and throws the spans away), so the export's cost counts too.
//! 6. A markdown table: each run, each system over all rounds (latency histograms
//!    merged), and phase 3's cost relative to phase 2 — then
//!    `target/bench/phase3.json`.
//!
//! Both systems log with `RUST_LOG=warn`, as in phase 2's benchmark: the logs are
//! not what is compared (phase 3's traces and metrics see INFO spans whatever
//! `RUST_LOG` says).

use crate::bench::phase2::{
    self, LatencyPlan, LatencyRun, Percentiles, QueueProbe, SaturationPlan, SaturationRun, Setup,
    Subject,
};
use crate::bench::{BenchArgs, free_local_addr};
use crate::load;
use anyhow::Context;
use clap::Args;
use common::shutdown::CancellationToken;
use common_local::process;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Args)]
#[command(
    next_help_heading = "Phase 3 (the instrumentation's overhead; also uses \
    --latency-rate, --saturation-in-flight and --warmup)"
)]
pub struct Phase3Args {
    /// Rounds, each running both systems (phase 2 then phase 3, then the other way
    /// round, and so on).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=20))]
    rounds: u16,
    /// Each run's saturation run (closed loop; the first --warmup is not measured).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    phase3_saturation_duration: Duration,
    /// Each run's latency run (open model; the first --warmup is not measured).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    phase3_latency_duration: Duration,
    /// Export phase 3's traces over OTLP/HTTP to a receiver the benchmark runs (it
    /// discards them), so the export's cost is measured too. Default: no export, as
    /// phase 3 runs without OTEL_EXPORTER_OTLP_ENDPOINT.
    #[arg(long)]
    otlp_sink: bool,
    /// How often phase 3's GET /metrics is scraped during its runs, as Prometheus
    /// would.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    scrape_interval: Duration,
    /// Phase 3's --probe-interval: how often it samples lag, dead letters and the
    /// outboxes (default: phase 3's own, 5s). A long one takes the probes' cost out.
    #[arg(long, value_parser = humantime::parse_duration)]
    probe_interval: Option<Duration>,
}

/// The systems of round `round` (1, 2, …), in the order they run: ABBA, so that a
/// drift growing steadily over the benchmark costs both the same.
fn order_of_round(round: u16) -> [Subject; 2] {
    if round % 2 == 1 {
        [Subject::Phase2, Subject::Phase3]
    } else {
        [Subject::Phase3, Subject::Phase2]
    }
}

pub fn run(args: &BenchArgs) -> anyhow::Result<serde_json::Value> {
    let began = std::time::Instant::now();
    let p3 = &args.phase3;
    anyhow::ensure!(
        p3.phase3_saturation_duration > args.warmup && p3.phase3_latency_duration > args.warmup,
        "--phase3-saturation-duration and --phase3-latency-duration must be longer than \
         --warmup ({:?})",
        args.warmup
    );
    anyhow::ensure!(
        !p3.scrape_interval.is_zero(),
        "--scrape-interval must be longer than 0"
    );
    // Fail before the long builds if something is missing.
    let crate::bench::phase2::Infrastructure {
        admin_url,
        brokers,
        redis_url,
    } = crate::bench::phase2::Infrastructure::check()?;

    let bins = [
        crate::bench::build_release(Subject::Phase2.package())?,
        crate::bench::build_release(Subject::Phase3.package())?,
    ];
    let built = std::time::Instant::now();

    let dir = process::target_dir().join("bench/phase3");
    match std::fs::remove_dir_all(&dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(err).context(format!("clearing {}", dir.display()));
        }
        _ => {}
    }
    std::fs::create_dir_all(&dir)?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let sink = if p3.otlp_sink {
        let sink = runtime.block_on(OtlpSink::start())?;
        println!(
            "OTLP/HTTP receiver (discards what it gets) on {}",
            sink.endpoint()
        );
        Some(sink)
    } else {
        None
    };

    let mut rate = args.phase2.latency_rate;
    let mut runs = Vec::new();
    drop_databases(&admin_url);
    for round in 1..=p3.rounds {
        for subject in order_of_round(round) {
            let bin = match subject {
                Subject::Phase2 => &bins[0],
                Subject::Phase3 => &bins[1],
            };
            let run_dir = dir.join(format!("{round}-{}", subject.name()));
            std::fs::create_dir_all(&run_dir)?;
            println!(
                "\n=== round {round} of {}: {} ===",
                p3.rounds,
                subject.package()
            );
            let setup = Setup {
                admin_url: admin_url.clone(),
                brokers: brokers.clone(),
                redis_url: redis_url.clone(),
                namespace: format!("bench-{millis}-{round}-{}", subject.name()),
                subject,
                bin: bin.clone(),
                dir: run_dir,
                have_pgbench: false,
                ops_addr: match subject {
                    Subject::Phase2 => None,
                    Subject::Phase3 => Some(free_local_addr()?),
                },
                otlp_endpoint: match subject {
                    Subject::Phase2 => None,
                    Subject::Phase3 => sink.as_ref().map(OtlpSink::endpoint),
                },
                extra_args: match (subject, p3.probe_interval) {
                    (Subject::Phase3, Some(interval)) => vec![
                        "--probe-interval".to_owned(),
                        format!("{}ms", interval.as_millis()),
                    ],
                    _ => Vec::new(),
                },
            };
            let outcome = runtime.block_on(one_run(args, &setup, round, &mut rate, sink.as_ref()));
            // Whatever happened: no databases and no topics left behind.
            drop_databases(&admin_url);
            runtime.block_on(crate::bench::phase2::delete_topics(&setup));
            runs.push(outcome?);
        }
    }
    drop(sink);

    let summary: Vec<SubjectSummary> = [Subject::Phase2, Subject::Phase3]
        .into_iter()
        .map(|subject| SubjectSummary::of(subject, &runs))
        .collect::<anyhow::Result<_>>()?;
    let overhead = Overhead::of(&summary[0], &summary[1], &runs);
    let results = Results {
        benchmark: "phase3: the instrumentation's cost (phase 2 and phase 3, same run)",
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        warmup_s: args.warmup.as_secs_f64(),
        rounds: p3.rounds,
        saturation_in_flight: args.phase2.saturation_in_flight,
        saturation_s: p3.phase3_saturation_duration.as_secs_f64(),
        latency_s: p3.phase3_latency_duration.as_secs_f64(),
        latency_rate: rate.unwrap_or(f64::NAN),
        rate_from_saturation: args.phase2.latency_rate.is_none(),
        otlp_sink: p3.otlp_sink,
        scrape_interval_s: p3.scrape_interval.as_secs_f64(),
        probe_interval_s: p3.probe_interval.map(|i| i.as_secs_f64()),
        runs,
        summary,
        overhead,
        seconds: began.elapsed().as_secs_f64(),
        build_seconds: (built - began).as_secs_f64(),
    };
    print_table(&results);
    let json = process::target_dir().join("bench/phase3.json");
    std::fs::write(&json, serde_json::to_string_pretty(&results)? + "\n")?;
    println!(
        "\nwritten to {} (logs in {}); {:.0} s in all, {:.0} s of it building",
        json.display(),
        dir.display(),
        results.seconds,
        results.build_seconds
    );
    Ok(serde_json::to_value(&results)?)
}

fn drop_databases(admin_url: &str) {
    phase2::drop_databases(admin_url);
}

/// One system, started, primed, saturated, then at the fixed arrival rate; stopped.
/// `rate` is set from this run's saturation run if nobody set it yet.
async fn one_run(
    args: &BenchArgs,
    setup: &Setup,
    round: u16,
    rate: &mut Option<f64>,
    sink: Option<&OtlpSink>,
) -> anyhow::Result<RunReport> {
    let began = Instant::now();
    let exported_before = sink.map(OtlpSink::counts);
    let mut server = phase2::start_system(setup).await?;
    let scraper = setup
        .ops_addr
        .map(|ops| Scraper::start(format!("http://{ops}/metrics"), args.phase3.scrape_interval))
        .transpose()?;
    let measured = measure(args, setup, &mut server, rate).await;
    let scrapes = match scraper {
        Some(scraper) => Some(scraper.stop().await),
        None => None,
    };
    // Phase 3 flushes the spans still batched when it stops: they count as exported.
    server.terminate(Duration::from_secs(20)).await;
    let (saturation, latency) = measured?;
    let otlp = sink
        .zip(exported_before)
        .map(|(sink, before)| sink.counts().since(before));
    Ok(RunReport {
        round,
        subject: setup.subject,
        namespace: setup.namespace.clone(),
        cpu_s_per_order: cpu_per_order(&saturation, |_| true),
        service_cpu_s_per_order: cpu_per_order(&saturation, |name| name == setup.subject.package()),
        saturation,
        latency,
        scrapes,
        otlp,
        seconds: began.elapsed().as_secs_f64(),
    })
}

async fn measure(
    args: &BenchArgs,
    setup: &Setup,
    server: &mut crate::bench::Server,
    rate: &mut Option<f64>,
) -> anyhow::Result<(SaturationRun, LatencyRun)> {
    let p3 = &args.phase3;
    let observer = phase2::prime(setup, server).await?;
    let url = format!("http://{}/orders", server.addr());
    let probe = QueueProbe::new(setup).await?;
    let plan = SaturationPlan {
        in_flight: args.phase2.saturation_in_flight,
        duration: p3.phase3_saturation_duration,
        warmup: args.warmup,
    };
    println!(
        "saturation run: {} orders in the system for {:?} (first {:?} not measured)…",
        plan.in_flight, plan.duration, plan.warmup
    );
    let (saturation, unfinished) =
        phase2::saturation_run(&plan, setup.subject, &url, &observer, &probe).await?;
    server.check_running()?;
    println!(
        "  {:.1} orders/s sustained ({} finished, {} API errors)",
        saturation.finished_per_second, saturation.finished, saturation.api_errors
    );
    // The latency run starts on an idle system.
    phase2::drain(&observer, &unfinished).await;

    let plan = LatencyPlan {
        rate: *rate.get_or_insert_with(|| phase2::half_rate(saturation.finished_per_second)),
        rate_from_saturation: args.phase2.latency_rate.is_none(),
        duration: p3.phase3_latency_duration,
        warmup: args.warmup,
    };
    println!(
        "latency run: {} orders/s arriving for {:?} (first {:?} not measured)…",
        plan.rate, plan.duration, plan.warmup
    );
    let latency = phase2::latency_run(&plan, &url, &observer).await?;
    server.check_running()?;
    println!(
        "  API p99 {:.1} ms, end to end p99 {:.1} ms ({} delivered, {} unfinished)",
        latency.api.p99_ms, latency.end_to_end.p99_ms, latency.delivered, latency.incomplete
    );
    observer.stop().await;
    Ok((saturation, latency))
}

/// CPU seconds per finished order during the saturation run, of the programs whose
/// name `pick` accepts — never the benchmark's own ([`crate::bench::LOAD_GENERATOR`]: load
/// generator and observer). NaN without /proc or without finished orders.
fn cpu_per_order(run: &SaturationRun, pick: impl Fn(&str) -> bool) -> f64 {
    let Some(cpu) = &run.cpu else {
        return f64::NAN;
    };
    let cores: f64 = cpu
        .iter()
        .filter(|(name, _)| name != crate::bench::LOAD_GENERATOR && pick(name))
        .map(|(_, percent)| percent / 100.0)
        .sum();
    // Both are rates over the same window: (CPU s / s) / (orders / s).
    if run.finished_per_second > 0.0 {
        cores / run.finished_per_second
    } else {
        f64::NAN
    }
}

// ---------------------------------------------------------------------------------
// What Prometheus would do.

/// GETs a `/metrics` URL every `interval` until stopped.
#[derive(Debug)]
struct Scraper {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<ScrapeStats>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
struct ScrapeStats {
    scrapes: u64,
    /// Not 200, or no answer.
    failed: u64,
    /// Size of the last exposition.
    last_bytes: usize,
    mean_ms: f64,
    max_ms: f64,
}

impl Scraper {
    fn start(url: String, interval: Duration) -> anyhow::Result<Scraper> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut stats = ScrapeStats::default();
            let mut total_ms = 0.0;
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stopped.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let sent = Instant::now();
                let body = match client.get(&url).send().await {
                    Ok(response) if response.status().is_success() => response.bytes().await.ok(),
                    _ => None,
                };
                let ms = sent.elapsed().as_secs_f64() * 1000.0;
                stats.scrapes += 1;
                match body {
                    Some(body) => {
                        stats.last_bytes = body.len();
                        total_ms += ms;
                        stats.max_ms = stats.max_ms.max(ms);
                    }
                    None => stats.failed += 1,
                }
            }
            let answered = stats.scrapes - stats.failed;
            if answered > 0 {
                stats.mean_ms = total_ms / answered as f64;
            }
            stats
        });
        Ok(Scraper { stop, task })
    }

    async fn stop(self) -> ScrapeStats {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------
// Where traces are exported with --otlp-sink.

/// The smallest OTLP/HTTP receiver that keeps an exporter happy: one axum route,
/// `POST /v1/traces`, that reads the body, answers `200` with an empty body — an
/// empty `ExportTraceServiceResponse`, i.e. everything accepted — and counts what came.
/// hyper underneath keeps connections alive and reads `Content-Length` and chunked
/// bodies alike, as the exporter's HTTP client expects.
#[derive(Debug)]
struct OtlpSink {
    addr: SocketAddr,
    counts: Arc<SinkCounters>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct SinkCounters {
    requests: AtomicU64,
    bytes: AtomicU64,
    /// Requests whose body could not be read (the connection broke inside it, or it
    /// was larger than [`MAX_BODY`]).
    broken: AtomicU64,
}

/// What reached the sink (during one run).
#[derive(Debug, Clone, Copy, Serialize)]
struct ExportStats {
    requests: u64,
    bytes: u64,
    broken_connections: u64,
}

impl ExportStats {
    fn since(self, before: ExportStats) -> ExportStats {
        ExportStats {
            requests: self.requests - before.requests,
            bytes: self.bytes - before.bytes,
            broken_connections: self.broken_connections - before.broken_connections,
        }
    }
}

/// Requests larger than this are refused (the exporter's batches are far smaller).
const MAX_BODY: usize = 64 << 20;

impl OtlpSink {
    async fn start() -> anyhow::Result<OtlpSink> {
        use axum::extract::{DefaultBodyLimit, State};
        use axum::http::{StatusCode, header};

        async fn export(
            State(counts): State<Arc<SinkCounters>>,
            body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
        ) -> impl axum::response::IntoResponse {
            match body {
                Ok(body) => {
                    counts.requests.fetch_add(1, Ordering::Relaxed);
                    counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/x-protobuf")],
                    )
                }
                Err(rejection) => {
                    counts.broken.fetch_add(1, Ordering::Relaxed);
                    (rejection.status(), [(header::CONTENT_TYPE, "text/plain")])
                }
            }
        }

        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(SinkCounters::default());
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(export))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(counts.clone());
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                eprintln!("OTLP sink: {err}");
            }
        });
        Ok(OtlpSink { addr, counts, task })
    }

    /// For `OTEL_EXPORTER_OTLP_ENDPOINT` (the exporter adds `/v1/traces`).
    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn counts(&self) -> ExportStats {
        ExportStats {
            requests: self.counts.requests.load(Ordering::Relaxed),
            bytes: self.counts.bytes.load(Ordering::Relaxed),
            broken_connections: self.counts.broken.load(Ordering::Relaxed),
        }
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------
// The report.

#[derive(Debug, Serialize)]
struct RunReport {
    round: u16,
    subject: Subject,
    namespace: String,
    saturation: SaturationRun,
    latency: LatencyRun,
    /// CPU seconds per order finished in the saturation run: the services, the broker,
    /// PostgreSQL and Redis (not the load generator).
    cpu_s_per_order: f64,
    /// Of which the system's own process.
    service_cpu_s_per_order: f64,
    /// Phase 3: its /metrics, scraped during the run.
    scrapes: Option<ScrapeStats>,
    /// Phase 3 with --otlp-sink: what its exporter sent.
    otlp: Option<ExportStats>,
    /// The run, from start to stop.
    seconds: f64,
}

/// One system over all rounds.
#[derive(Debug, Serialize)]
struct SubjectSummary {
    subject: Subject,
    runs: usize,
    /// Mean of the runs' sustained rates.
    sustained_per_second: f64,
    sustained_min: f64,
    sustained_max: f64,
    /// The latency runs' orders together (histograms merged).
    api: Percentiles,
    end_to_end: Percentiles,
    /// Orders measured in the latency runs (the sample the percentiles come from).
    latency_orders: u64,
    /// Means of the runs'.
    cpu_s_per_order: f64,
    service_cpu_s_per_order: f64,
}

impl SubjectSummary {
    fn of(subject: Subject, runs: &[RunReport]) -> anyhow::Result<SubjectSummary> {
        let mine: Vec<&RunReport> = runs.iter().filter(|r| r.subject == subject).collect();
        let (mut api, mut end_to_end) = (load::histogram(), load::histogram());
        for run in &mine {
            api.add(&run.latency.api_us)
                .map_err(|err| anyhow::anyhow!("merging histograms: {err:?}"))?;
            end_to_end
                .add(&run.latency.end_to_end_us)
                .map_err(|err| anyhow::anyhow!("merging histograms: {err:?}"))?;
        }
        let sustained: Vec<f64> = mine
            .iter()
            .map(|r| r.saturation.finished_per_second)
            .collect();
        Ok(SubjectSummary {
            subject,
            runs: mine.len(),
            sustained_per_second: mean(&sustained),
            sustained_min: sustained.iter().copied().fold(f64::INFINITY, f64::min),
            sustained_max: sustained.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            latency_orders: end_to_end.len(),
            api: Percentiles::of(&api),
            end_to_end: Percentiles::of(&end_to_end),
            cpu_s_per_order: mean(&mine.iter().map(|r| r.cpu_s_per_order).collect::<Vec<_>>()),
            service_cpu_s_per_order: mean(
                &mine
                    .iter()
                    .map(|r| r.service_cpu_s_per_order)
                    .collect::<Vec<_>>(),
            ),
        })
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Phase 3 relative to phase 2, in %: positive is phase 3 worse.
#[derive(Debug, Serialize)]
struct Overhead {
    /// Sustained orders/s phase 3 loses: (phase 2 − phase 3) / phase 2.
    throughput_pct: f64,
    /// The same, round by round.
    throughput_pct_by_round: Vec<f64>,
    /// How far apart phase 2's own runs are, (max − min) / mean: the noise floor.
    phase2_spread_pct: f64,
    cpu_per_order_pct: f64,
    service_cpu_per_order_pct: f64,
    api_p99_pct: f64,
    end_to_end_p99_pct: f64,
}

impl Overhead {
    fn of(phase2: &SubjectSummary, phase3: &SubjectSummary, runs: &[RunReport]) -> Overhead {
        let more = |p2: f64, p3: f64| 100.0 * (p3 - p2) / p2;
        let rounds = runs.iter().map(|r| r.round).max().unwrap_or(0);
        let by_round = (1..=rounds)
            .filter_map(|round| {
                let rate = |subject| {
                    runs.iter()
                        .find(|r| r.round == round && r.subject == subject)
                        .map(|r| r.saturation.finished_per_second)
                };
                let (p2, p3) = (rate(Subject::Phase2)?, rate(Subject::Phase3)?);
                Some(-more(p2, p3))
            })
            .collect();
        Overhead {
            throughput_pct: -more(phase2.sustained_per_second, phase3.sustained_per_second),
            throughput_pct_by_round: by_round,
            phase2_spread_pct: 100.0 * (phase2.sustained_max - phase2.sustained_min)
                / phase2.sustained_per_second,
            cpu_per_order_pct: more(phase2.cpu_s_per_order, phase3.cpu_s_per_order),
            service_cpu_per_order_pct: more(
                phase2.service_cpu_s_per_order,
                phase3.service_cpu_s_per_order,
            ),
            api_p99_pct: more(phase2.api.p99_ms, phase3.api.p99_ms),
            end_to_end_p99_pct: more(phase2.end_to_end.p99_ms, phase3.end_to_end.p99_ms),
        }
    }
}

#[derive(Debug, Serialize)]
struct Results {
    benchmark: &'static str,
    cores: usize,
    warmup_s: f64,
    rounds: u16,
    saturation_in_flight: u16,
    saturation_s: f64,
    latency_s: f64,
    /// Orders/s arriving in every latency run.
    latency_rate: f64,
    rate_from_saturation: bool,
    otlp_sink: bool,
    scrape_interval_s: f64,
    /// Phase 3's --probe-interval, when not its default.
    probe_interval_s: Option<f64>,
    runs: Vec<RunReport>,
    summary: Vec<SubjectSummary>,
    overhead: Overhead,
    /// The whole `cargo xtask bench phase3`, builds included.
    seconds: f64,
    build_seconds: f64,
}

/// `+3.1 %`, `−0.4 %`.
fn signed_pct(value: f64) -> String {
    if value.is_nan() {
        "–".to_owned()
    } else if value < 0.0 {
        format!("−{:.1} %", -value)
    } else {
        format!("+{value:.1} %")
    }
}

fn print_table(r: &Results) {
    let o = &r.overhead;
    println!(
        "\n{}: {} cores shared by the load generator, the observer, the services, \
         PostgreSQL and the broker; {}, each run on fresh databases and topics\n",
        r.benchmark,
        r.cores,
        match r.rounds {
            1 => "1 round (phase 2, then phase 3)".to_owned(),
            n => format!("{n} rounds (phase 2 and phase 3 in ABBA order)"),
        },
    );
    let ms = |v: f64| format!("{v:.1}");
    let cpu = |all: f64, service: f64| format!("{all:.4} ({service:.4})");
    let mut rows: Vec<[String; 7]> = vec![[
        "subject".into(),
        "sustained orders/s".into(),
        "e2e p50 ms".into(),
        "e2e p99 ms".into(),
        "API p50 ms".into(),
        format!("API p99 ms at {} orders/s", r.latency_rate),
        "CPU s/order (service)".into(),
    ]];
    for run in &r.runs {
        rows.push([
            format!("round {}: {}", run.round, run.subject.package()),
            format!("{:.1}", run.saturation.finished_per_second),
            ms(run.latency.end_to_end.p50_ms),
            ms(run.latency.end_to_end.p99_ms),
            ms(run.latency.api.p50_ms),
            ms(run.latency.api.p99_ms),
            cpu(run.cpu_s_per_order, run.service_cpu_s_per_order),
        ]);
    }
    for s in &r.summary {
        rows.push([
            format!("**{}**, {} runs", s.subject.package(), s.runs),
            format!("**{:.1}**", s.sustained_per_second),
            ms(s.end_to_end.p50_ms),
            ms(s.end_to_end.p99_ms),
            ms(s.api.p50_ms),
            ms(s.api.p99_ms),
            cpu(s.cpu_s_per_order, s.service_cpu_s_per_order),
        ]);
    }
    let (p2, p3) = (&r.summary[0], &r.summary[1]);
    let more = |a: f64, b: f64| signed_pct(100.0 * (b - a) / a);
    rows.push([
        "phase 3 relative to phase 2".into(),
        more(p2.sustained_per_second, p3.sustained_per_second),
        more(p2.end_to_end.p50_ms, p3.end_to_end.p50_ms),
        signed_pct(o.end_to_end_p99_pct),
        more(p2.api.p50_ms, p3.api.p50_ms),
        signed_pct(o.api_p99_pct),
        format!(
            "{} ({})",
            signed_pct(o.cpu_per_order_pct),
            signed_pct(o.service_cpu_per_order_pct)
        ),
    ]);
    phase2::print_markdown(&rows, 1..=6);

    println!(
        "\nSustained: closed loop, {} orders in the system, {:.0} s measured per run. \
         Percentiles: open model at {} orders/s{}, {:.0} s measured per run, {} orders per \
         system in all (a p99 of so few is close to their maximum). CPU: Kafka, \
         PostgreSQL, Redis and the system's process during the saturation run, per order \
         finished; in brackets the system's process alone. The first {:.0} s of each run \
         are not measured.",
        r.saturation_in_flight,
        r.saturation_s - r.warmup_s,
        r.latency_rate,
        if r.rate_from_saturation {
            " (½ the first run's sustained rate)"
        } else {
            ""
        },
        r.latency_s - r.warmup_s,
        p2.latency_orders.min(p3.latency_orders),
        r.warmup_s
    );
    if let Some(interval) = r.probe_interval_s {
        println!("Phase 3 ran with --probe-interval {interval} s (not its default).");
    }
    for run in r.runs.iter().filter(|run| run.subject == Subject::Phase3) {
        let mut notes = Vec::new();
        if let Some(s) = &run.scrapes {
            notes.push(format!(
                "{} scrapes of /metrics ({} failed), {} bytes, {:.1} ms mean, {:.1} ms max",
                s.scrapes, s.failed, s.last_bytes, s.mean_ms, s.max_ms
            ));
        }
        match &run.otlp {
            Some(e) => notes.push(format!(
                "OTLP export: {} requests, {:.0} kB{}",
                e.requests,
                e.bytes as f64 / 1000.0,
                if e.broken_connections > 0 {
                    format!(", {} broken connections", e.broken_connections)
                } else {
                    String::new()
                }
            )),
            None => notes.push("traces not exported (no --otlp-sink)".to_owned()),
        }
        println!("Round {} phase 3: {}.", run.round, notes.join("; "));
        if run.otlp.is_some_and(|e| e.requests == 0) {
            println!(
                "note: phase 3 exported nothing to the OTLP receiver in round {}: see {}",
                run.round,
                run_log(run).display()
            );
        }
    }
    for run in &r.runs {
        let (s, l) = (&run.saturation, &run.latency);
        if s.api_errors + l.api_errors > 0 || l.incomplete > 0 || s.cancelled > 0 {
            println!(
                "note: round {} {}: {} + {} API errors, {} cancelled, {} unfinished (see {})",
                run.round,
                run.subject.package(),
                s.api_errors,
                l.api_errors,
                s.cancelled + l.cancelled,
                l.incomplete,
                run_log(run).display()
            );
        }
    }
    let by_round: Vec<String> = o
        .throughput_pct_by_round
        .iter()
        .map(|&pct| format!("{pct:.1} %"))
        .collect();
    println!(
        "\n**Overhead of phase 3's instrumentation: {:.1} % of the sustained throughput** \
         (target < 10 %: {}; by round: {}; phase 2's own runs differ by {:.1} %), CPU per \
         order {} (its process {}), API p99 {}, end-to-end p99 {}.",
        o.throughput_pct,
        if o.throughput_pct < 10.0 {
            "met"
        } else {
            "NOT met"
        },
        by_round.join(", "),
        o.phase2_spread_pct,
        signed_pct(o.cpu_per_order_pct),
        signed_pct(o.service_cpu_per_order_pct),
        signed_pct(o.api_p99_pct),
        signed_pct(o.end_to_end_p99_pct),
    );
}

fn run_log(run: &RunReport) -> std::path::PathBuf {
    process::target_dir()
        .join("bench/phase3")
        .join(format!("{}-{}", run.round, run.subject.name()))
        .join("system.log")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_alternate_abba() {
        let order: Vec<Subject> = (1..=4).flat_map(order_of_round).collect();
        use Subject::{Phase2 as A, Phase3 as B};
        assert_eq!(order, [A, B, B, A, A, B, B, A]);
    }

    #[test]
    fn percentages_read_with_their_sign() {
        assert_eq!(signed_pct(3.06), "+3.1 %");
        assert_eq!(signed_pct(-0.44), "−0.4 %");
        assert_eq!(signed_pct(f64::NAN), "–");
    }

    /// The sink answers an OTLP-style POST (with a body, kept alive, then chunked).
    #[tokio::test]
    async fn the_otlp_sink_accepts_posts() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let sink = OtlpSink::start().await.unwrap();
        let mut stream = tokio::net::TcpStream::connect(sink.addr).await.unwrap();
        let request = b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: \
            application/x-protobuf\r\ncontent-length: 5\r\n\r\nhello\
            POST /v1/traces HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n\
            3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        stream.write_all(request).await.unwrap();
        let mut answers = String::new();
        let mut buffer = [0; 1024];
        while answers.matches("200 OK").count() < 2 {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "closed early: {answers}");
            answers.push_str(std::str::from_utf8(&buffer[..n]).unwrap());
        }
        drop(stream);
        let counts = sink.counts();
        assert_eq!((counts.requests, counts.bytes), (2, 10));
    }
}
