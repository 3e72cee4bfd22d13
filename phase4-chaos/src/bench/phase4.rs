//! `cargo xtask bench phase4`: the platform behind its gateway at the brief's load.
//!
//! Two processes, so that the gateway's CPU and memory show apart: `phase4-chaos all
//! --without-gateway` (phase 3's system and the second order API replica) and
//! `phase4-chaos gateway` in front of both replicas — each started from a copy of the
//! binary named `platform` and `gateway`, since `/proc` tells processes apart by
//! name. The payment provider answers like a real card API (50–200 ms, 5 %
//! failures; phase 2's 2–5 s is a teaching exaggeration no end-to-end target
//! survives) and the delivery steps take no time, so that end to end is the
//! platform's own time.
//!
//! Every run is judged on the brief's four targets: the gateway's p99 ≤ 200 ms,
//! errors (other than the deliberate 429 and 503) ≤ 0.1 %, every order accepted
//! during the run final once the pipeline drains, and end to end (accepted → final,
//! from the order database, for the orders accepted during the run) p99 ≤ 2 s.
//!
//! 1. **Ramp**: the default mix at each `--phase4-ramp` rate for `--phase4-step`; the
//!    highest rate at which all four hold.
//! 2. **The brief's run**: `--phase4-rate` (1000/s) for `--phase4-duration` (60 s).
//! 3. **Twice the highest holding rate**: goodput at least 90 % of what that rate
//!    achieved, with reads (menu, status) still inside 200 ms.

use super::phase2::{drop_databases_named, proc_use};
use super::{BenchArgs, Server, build_release};
use crate::load::mix::Endpoint;
use crate::load::run::{self, LoadArgs, LoadReport};
use anyhow::Context;
use clap::Args;
use common_local::{endpoints, process};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Args)]
#[command(next_help_heading = "Phase 4")]
pub struct Phase4Args {
    /// The brief's run: requests per second of the default mix (open model).
    #[arg(long, default_value_t = 1000.0)]
    phase4_rate: f64,
    /// The brief's run: how long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    phase4_duration: Duration,
    /// The ramp: the rates tried, in order.
    #[arg(long, value_delimiter = ',', default_value = "200,400,600,800,1000")]
    phase4_ramp: Vec<f64>,
    /// The ramp: how long each rate (and the run at twice the highest holding one).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    phase4_step: Duration,
}

/// The databases of the platform under test (dropped before and after).
const DATABASES: [(&str, &str); 4] = [
    ("ORDER_DATABASE_URL", "ferriseats_bench4_orders"),
    ("PAYMENT_DATABASE_URL", "ferriseats_bench4_payments"),
    ("INVENTORY_DATABASE_URL", "ferriseats_bench4_inventory"),
    ("DELIVERY_DATABASE_URL", "ferriseats_bench4_delivery"),
];
/// The gateway's SLO in the brief.
const GATEWAY_P99_MS: f64 = 200.0;
const MAX_ERRORS: f64 = 0.001;
const E2E_P99_MS: f64 = 2000.0;

#[derive(Debug, Clone, Serialize)]
struct Step {
    offered_per_s: f64,
    goodput_per_s: f64,
    refused_per_s: f64,
    p99_ms: f64,
    reads_p99_ms: f64,
    errors: f64,
    dropped: u64,
    /// Orders accepted during the run, and how many of them were not final when the
    /// drain gave up.
    accepted_orders: i64,
    unfinished_orders: i64,
    e2e_p50_ms: Option<f64>,
    e2e_p99_ms: Option<f64>,
    holds: bool,
}

/// The orders accepted between two instants, once the pipeline finished them.
struct Orders {
    accepted: i64,
    unfinished: i64,
    e2e_p50_ms: Option<f64>,
    e2e_p99_ms: Option<f64>,
}

impl Orders {
    /// Waits (at most `drain`) for the orders accepted in `[from, to)` to be final,
    /// then reads their end-to-end times from the order database.
    async fn of(
        pool: &sqlx::AnyPool,
        from: &str,
        to: &str,
        drain: Duration,
    ) -> anyhow::Result<Orders> {
        let deadline = tokio::time::Instant::now() + drain;
        let unfinished = loop {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM orders WHERE status NOT IN ('delivered', 'cancelled') \
                 AND created_at >= $1 AND created_at < $2",
            )
            .bind(from)
            .bind(to)
            .fetch_one(pool)
            .await?;
            if open == 0 || tokio::time::Instant::now() > deadline {
                break open;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let accepted: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM orders WHERE created_at >= $1 AND created_at < $2",
        )
        .bind(from)
        .bind(to)
        .fetch_one(pool)
        .await?;
        let (e2e_p50_ms, e2e_p99_ms): (Option<f64>, Option<f64>) = sqlx::query_as(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), \
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) FROM ( \
               SELECT extract(epoch FROM (updated_at::timestamptz - created_at::timestamptz)) \
                      * 1000.0 AS ms FROM orders \
               WHERE status IN ('delivered', 'cancelled') \
                 AND created_at >= $1 AND created_at < $2) AS finished",
        )
        .bind(from)
        .bind(to)
        .fetch_one(pool)
        .await?;
        Ok(Orders {
            accepted,
            unfinished,
            e2e_p50_ms,
            e2e_p99_ms,
        })
    }
}

/// One run of the load generator at `rate` for `duration`, judged with the orders it
/// placed.
async fn step(
    pool: &sqlx::AnyPool,
    rate: f64,
    duration: Duration,
    drain: Duration,
) -> anyhow::Result<(Step, LoadReport)> {
    let from = common::db::timestamp(common::db::now());
    let report = run::run(&load_args(rate, duration)).await?;
    let to = common::db::timestamp(common::db::now());
    let orders = Orders::of(pool, &from, &to, drain).await?;
    Ok((Step::of(&report, &orders), report))
}

impl Step {
    fn of(report: &LoadReport, orders: &Orders) -> Step {
        let errors = if report.totals.sent == 0 {
            0.0
        } else {
            report.totals.errors() as f64 / report.totals.sent as f64
        };
        let reads_p99_ms = report
            .endpoints
            .iter()
            .filter(|e| matches!(e.endpoint, Endpoint::Menu | Endpoint::Status))
            .map(|e| e.latency.p99_ms)
            .fold(0.0, f64::max);
        Step {
            offered_per_s: report.offered_per_s,
            goodput_per_s: report.goodput_per_s,
            refused_per_s: report.totals.refused as f64 / report.duration_s.max(1e-9),
            p99_ms: report.latency.p99_ms,
            reads_p99_ms,
            errors,
            dropped: report.dropped,
            accepted_orders: orders.accepted,
            unfinished_orders: orders.unfinished,
            e2e_p50_ms: orders.e2e_p50_ms,
            e2e_p99_ms: orders.e2e_p99_ms,
            holds: report.latency.p99_ms <= GATEWAY_P99_MS
                && errors <= MAX_ERRORS
                && orders.unfinished == 0
                && orders.e2e_p99_ms.is_some_and(|p99| p99 <= E2E_P99_MS),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Summary {
    ramp: Vec<Step>,
    highest_holding_per_s: Option<f64>,
    /// The highest holding rate is the ramp's last: the platform may hold more (extend
    /// `--phase4-ramp` to find out).
    highest_is_ramp_top: bool,
    brief: Step,
    twice_highest: Option<Step>,
    /// Reads (menu, status) inside the gateway's SLO at twice the highest holding rate.
    twice_reads_hold: Option<bool>,
    twice_goodput_over_highest: Option<f64>,
    gateway_cpu_ms_per_request: Option<f64>,
    gateway_rss_mib: Option<f64>,
    platform_cpu_ms_per_request: Option<f64>,
    platform_rss_mib: Option<f64>,
}

fn load_args(rate: f64, duration: Duration) -> LoadArgs {
    crate::parse_flags(&[
        "--rate",
        &rate.to_string(),
        "--duration",
        &format!("{}ms", duration.as_millis()),
        "--customers",
        "2000",
        "--seed",
        "4",
        "--timeout",
        "5s",
    ])
    .expect("the benchmark's own load flags parse")
}

pub fn run(args: &BenchArgs) -> anyhow::Result<serde_json::Value> {
    let p4 = &args.phase4;
    let bin = build_release("phase4-chaos")?;
    let dir = process::target_dir().join("bench").join("phase4");
    std::fs::create_dir_all(&dir)?;
    // Copies under their own names: /proc/PID/comm is how the CPU is told apart.
    let platform_bin = dir.join("platform");
    let gateway_bin = dir.join("gateway");
    for copy in [&platform_bin, &gateway_bin] {
        std::fs::copy(&bin, copy).with_context(|| format!("copying to {}", copy.display()))?;
    }
    let admin = endpoints::LOCAL_POSTGRES_URL;
    let names: Vec<&str> = DATABASES.iter().map(|(_, n)| *n).collect();
    drop_databases_named(admin, &names);
    let runtime = tokio::runtime::Runtime::new()?;
    let summary = runtime.block_on(measure(p4, &platform_bin, &gateway_bin, &dir));
    drop_databases_named(admin, &names);
    let summary = summary?;
    print(&summary);
    let value = serde_json::to_value(&summary)?;
    std::fs::write(
        process::target_dir().join("bench").join("phase4.json"),
        serde_json::to_string_pretty(&value)? + "\n",
    )?;
    Ok(value)
}

async fn measure(
    p4: &Phase4Args,
    platform_bin: &Path,
    gateway_bin: &Path,
    dir: &Path,
) -> anyhow::Result<Summary> {
    let admin = endpoints::LOCAL_POSTGRES_URL;
    let mut env: Vec<(String, Option<String>)> = DATABASES
        .iter()
        .map(|(var, name)| (var.to_string(), Some(endpoints::with_database(admin, name))))
        .collect();
    let namespace = format!("bench4-{}", uuid::Uuid::now_v7().simple());
    for (key, value) in [
        ("TOPIC_NAMESPACE", namespace.as_str()),
        ("PAYMENT_LATENCY", "50ms..200ms"),
        ("PAYMENT_FAILURE_RATE", "0.05"),
        ("PAYMENT_DECLINE_RATE", "0"),
        ("DELIVERY_PREPARE_AFTER", "0s"),
        ("DELIVERY_DISPATCH_AFTER", "0s"),
        ("DELIVERY_DELIVER_AFTER", "0s"),
        ("OTEL_SDK_DISABLED", "true"),
    ] {
        env.push((key.to_owned(), Some(value.to_owned())));
    }
    let order_db = endpoints::with_database(admin, DATABASES[0].1);
    let mut platform = Server::start_with_env(
        "platform",
        platform_bin,
        &["all", "--one-process", "--without-gateway"],
        &env,
        "127.0.0.1:9400".parse()?,
        &dir.join("platform.log"),
    )?;
    platform
        .wait_for("/health", Duration::from_secs(120))
        .await?;
    let mut gateway = Server::start(
        "gateway",
        gateway_bin,
        &[
            "gateway",
            "--upstream",
            "http://127.0.0.1:3100,http://127.0.0.1:3101",
        ],
        "127.0.0.1:9410".parse()?,
        &dir.join("gateway.log"),
    )?;
    gateway.wait_for("/ready", Duration::from_secs(60)).await?;
    println!("\nphase4: warming up (10 s at 100/s)…");
    run::run(&load_args(100.0, Duration::from_secs(10))).await?;

    let pool = common::db::connect(&order_db, 1).await?;
    let mut ramp = Vec::new();
    for rate in &p4.phase4_ramp {
        println!("phase4: ramp, {rate}/s for {:?}…", p4.phase4_step);
        let (step, _) = step(&pool, *rate, p4.phase4_step, Duration::from_secs(30)).await?;
        println!(
            "  goodput {:.0}/s, refused {:.0}/s, p99 {:.1} ms, errors {:.3} %, end to end p99 {} → {}",
            step.goodput_per_s,
            step.refused_per_s,
            step.p99_ms,
            step.errors * 100.0,
            step.e2e_p99_ms
                .map_or("–".to_owned(), |v| format!("{v:.0} ms")),
            if step.holds { "holds" } else { "does not hold" }
        );
        ramp.push(step);
    }
    let highest = ramp
        .iter()
        .filter(|s| s.holds)
        .max_by(|a, b| a.offered_per_s.total_cmp(&b.offered_per_s))
        .cloned();

    println!(
        "phase4: the brief's run, {}/s for {:?}…",
        p4.phase4_rate, p4.phase4_duration
    );
    let before = proc_use(&PROCESSES);
    let from = common::db::timestamp(common::db::now());
    let brief_report = run::run(&load_args(p4.phase4_rate, p4.phase4_duration)).await?;
    let to = common::db::timestamp(common::db::now());
    let after = proc_use(&PROCESSES);
    let orders = Orders::of(&pool, &from, &to, Duration::from_secs(90)).await?;
    let brief = Step::of(&brief_report, &orders);

    let twice = match &highest {
        Some(h) => {
            let rate = 2.0 * h.offered_per_s;
            println!("phase4: twice the highest holding rate, {rate}/s…");
            Some(
                step(&pool, rate, p4.phase4_step, Duration::from_secs(30))
                    .await?
                    .0,
            )
        }
        None => None,
    };
    pool.close().await;
    gateway.check_running()?;
    platform.check_running()?;
    let requests = brief_report.totals.sent.max(1) as f64;
    let cpu_ms = |i: usize| {
        Some((after.as_ref()?.cpu_seconds[i] - before.as_ref()?.cpu_seconds[i]) * 1000.0 / requests)
    };
    let rss = |i: usize| {
        after
            .as_ref()
            .map(|a| a.rss_bytes[i] as f64 / (1024.0 * 1024.0))
    };
    let summary = Summary {
        highest_holding_per_s: highest.as_ref().map(|h| h.offered_per_s),
        highest_is_ramp_top: highest
            .as_ref()
            .zip(p4.phase4_ramp.last())
            .is_some_and(|(h, top)| h.offered_per_s >= *top * 0.99),
        twice_goodput_over_highest: match (&twice, &highest) {
            (Some(t), Some(h)) if h.goodput_per_s > 0.0 => Some(t.goodput_per_s / h.goodput_per_s),
            _ => None,
        },
        twice_reads_hold: twice.as_ref().map(|t| t.reads_p99_ms <= GATEWAY_P99_MS),
        ramp,
        brief,
        twice_highest: twice,
        gateway_cpu_ms_per_request: cpu_ms(0),
        gateway_rss_mib: rss(0),
        platform_cpu_ms_per_request: cpu_ms(1),
        platform_rss_mib: rss(1),
    };
    gateway.terminate(Duration::from_secs(10)).await;
    platform.terminate(Duration::from_secs(30)).await;
    Ok(summary)
}

/// The processes measured apart, by the names their binaries were copied to.
const PROCESSES: [&str; 2] = ["gateway", "platform"];

fn print(s: &Summary) {
    let ms = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.0} ms"));
    println!("\nphase4: the platform behind its gateway (2 cores, everything co-located)\n");
    println!(
        "| run | offered/s | 2xx/s | 429+503/s | p99 ms | reads p99 ms | errors | dropped | orders | unfinished | e2e p50 | e2e p99 | SLO |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let row = |name: &str, step: &Step| {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.3} % | {} | {} | {} | {} | {} | {} |",
            step.offered_per_s,
            step.goodput_per_s,
            step.refused_per_s,
            step.p99_ms,
            step.reads_p99_ms,
            step.errors * 100.0,
            step.dropped,
            step.accepted_orders,
            step.unfinished_orders,
            ms(step.e2e_p50_ms),
            ms(step.e2e_p99_ms),
            if step.holds { "holds" } else { "missed" }
        );
    };
    for step in &s.ramp {
        row("ramp", step);
    }
    row("the brief's run", &s.brief);
    if let Some(twice) = &s.twice_highest {
        row("2× the highest holding", twice);
    }
    println!(
        "\nhighest rate at which all four targets hold: {}{}; at twice it, goodput {} of it (target ≥ 90 %), reads {} (p99 ≤ {GATEWAY_P99_MS} ms)",
        s.highest_holding_per_s
            .map_or("none".to_owned(), |r| format!("{r:.0}/s")),
        if s.highest_is_ramp_top {
            " (the ramp's top: it may hold more, extend --phase4-ramp)"
        } else {
            ""
        },
        s.twice_goodput_over_highest
            .map_or("–".to_owned(), |r| format!("{:.0} %", r * 100.0)),
        match s.twice_reads_hold {
            Some(true) => "inside their SLO",
            Some(false) => "outside their SLO",
            None => "–",
        }
    );
    println!("end to end target: p99 ≤ {E2E_P99_MS} ms for the orders accepted during each run");
    let per = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.3} ms"));
    let mib = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.0} MiB"));
    println!(
        "gateway: {} CPU per request, {} resident; platform: {} CPU per request, {} resident",
        per(s.gateway_cpu_ms_per_request),
        mib(s.gateway_rss_mib),
        per(s.platform_cpu_ms_per_request),
        mib(s.platform_rss_mib)
    );
}
