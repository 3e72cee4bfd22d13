//! `cargo xtask bench [phase1|phase2|phase3]`: throughput and latency of the real
//! service, next to the limit of the machine. This file runs phase 1 and holds what
//! all phases share; phase 2 (an event-driven system, measured end to end with an
//! open load model) is in [`crate::bench::phase2`]; phase 3 (what its instrumentation
//! costs: phase 2's system and phase 3's measured in alternating rounds of one run,
//! with phase 2's machinery) in [`crate::bench::phase3`].
//!
//! Speed is measured here and only here — never in timed unit tests, which flake on
//! a busy laptop and prove nothing on a fast one. A benchmark run:
//!
//! 1. builds the release binary (a debug build measures the compiler, not the design);
//! 2. starts the payment provider as its own process, with no injected latency or
//!    failures: the point is the cost of the order path itself;
//! 3. for each database (SQLite file, PostgreSQL database `ferriseats_bench` created
//!    fresh) starts the service, waits for `/ready`, drives `POST /orders` with the
//!    closed-loop [`closed`] load generator, and stops the service;
//! 4. runs [`pgbench`] with the same SQL at the same concurrency against the same
//!    PostgreSQL — the ceiling the database allows on this machine;
//! 5. prints a table and writes `target/bench/phase1.json`.
//!
//! Everything is local (127.0.0.1 only) and bounded in time. Child processes are
//! spawned with `kill_on_drop`, so an error on any path leaves no server behind
//! (Ctrl-C reaches them anyway: the terminal signals the whole process group). Logs of every process stay in `target/bench/phase1/` for a post-mortem.

pub mod phase2;
pub mod phase3;
pub mod phase4;

use crate::load::closed::{self, Load};
use crate::pgbench;
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use common_local::{endpoints, process, psql};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which benchmark to run (all of them when omitted).
    phase: Option<Phase>,
    /// Phase 1: requests (and pgbench clients) in flight at any time.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// How long to measure, e.g. 10s, 500ms, 1m (phase 1; the pgbench run of phase 2).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Traffic sent before measuring (connections, caches), then discarded.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,
    #[command(flatten)]
    pub(crate) phase2: crate::bench::phase2::Phase2Args,
    #[command(flatten)]
    pub(crate) phase3: crate::bench::phase3::Phase3Args,
    #[command(flatten)]
    pub(crate) phase4: crate::bench::phase4::Phase4Args,
    /// Also write the headline figures as JSON to this file (one phase: its figures;
    /// several: an object by phase). Every run also writes everything it measured to
    /// `target/bench/phaseN.json`.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Phase {
    /// POST /orders of the phase-1 monolith on SQLite and PostgreSQL, beside pgbench.
    Phase1,
    /// Phase 2's services end to end (POST /orders → delivered), beside the broker's
    /// produce rate and pgbench running one order's SQL.
    Phase2,
    /// The cost of phase 3's instrumentation: phase 2's system and phase 3's, in
    /// alternating rounds of the same run — sustained orders/s, API and end-to-end
    /// p99 at one arrival rate, CPU per order.
    Phase3,
    /// The platform behind its gateway: a ramp to the highest rate that holds the
    /// SLO, the brief's 1000 requests/s for 60 s, twice the highest holding rate; the
    /// gateway's CPU and memory.
    Phase4,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let phases = match args.phase {
        Some(phase) => vec![phase],
        None => Phase::value_variants().to_vec(),
    };
    let mut figures = serde_json::Map::new();
    for phase in &phases {
        let (name, value) = match phase {
            Phase::Phase1 => ("phase1", phase1(args)?),
            Phase::Phase2 => ("phase2", crate::bench::phase2::run(args)?),
            Phase::Phase3 => ("phase3", crate::bench::phase3::run(args)?),
            Phase::Phase4 => ("phase4", crate::bench::phase4::run(args)?),
        };
        figures.insert(name.to_owned(), value);
    }
    if let Some(path) = &args.json {
        let value = match phases.as_slice() {
            [_] => figures
                .into_iter()
                .next()
                .map(|(_, v)| v)
                .unwrap_or_default(),
            _ => serde_json::Value::Object(figures),
        };
        std::fs::write(path, serde_json::to_string_pretty(&value)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}

/// This program's process name (`/proc/PID/comm`): the load generator and observer,
/// whose CPU the benchmarks show apart from the system's.
pub(crate) const LOAD_GENERATOR: &str = "phase4-chaos";

/// Flags of a provider simulator that never fails, declines or waits: the benchmarks
/// measure the machinery, not the simulated world.
pub(crate) const PERFECT_PROVIDER: [&str; 6] = [
    "--payment-failure-rate",
    "0",
    "--payment-decline-rate",
    "0",
    "--payment-latency",
    "0",
];

/// `package`'s release binary, built (with the other benchmark packages, in one
/// `cargo build`: see [`process::BENCH_PACKAGES`]) if it is not up to date.
pub(crate) fn build_release(package: &str) -> anyhow::Result<std::path::PathBuf> {
    anyhow::ensure!(
        process::BENCH_PACKAGES.contains(&package),
        "{package} is not in BENCH_PACKAGES"
    );
    process::build_bench_packages()?;
    Ok(process::target_dir().join("release").join(package))
}

/// The order every benchmark places (phase 1 and 2); each `n` is another customer.
pub fn order_body(n: u64) -> String {
    format!(
        r#"{{"customer_id":"bench-{n}","items":[{{"sku":"pizza-margherita","qty":1}},{{"sku":"cola","qty":2}}]}}"#
    )
}

const BENCH_DATABASE: &str = "ferriseats_bench";
/// The rows of phase 1's table that its summary compares.
const POSTGRES_ROW: &str = "postgres";
const PGBENCH_ROW: &str = "pgbench (same SQL, same concurrency)";

fn phase1(args: &BenchArgs) -> anyhow::Result<serde_json::Value> {
    // Fail before the long build if the database is missing.
    let admin_url = endpoints::POSTGRES.url();
    psql::check_url(&admin_url).context(
        "PostgreSQL is needed for this benchmark: start it with `cargo xtask up` \
         (or point TEST_DATABASE_URL at a server)",
    )?;
    let have_pgbench = process::on_path("pgbench");

    let bin = build_release("phase1-monolith")?;

    let dir = process::target_dir().join("bench/phase1");
    match std::fs::remove_dir_all(&dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(err).context(format!("clearing {}", dir.display()));
        }
        _ => {}
    }
    std::fs::create_dir_all(&dir)?;

    // A fresh database, so every run starts from the same (empty) tables.
    let bench_url = common::db::with_database(&admin_url, BENCH_DATABASE);
    psql::execute(
        &admin_url,
        &format!("DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)"),
    )?;
    psql::execute(&admin_url, &format!("CREATE DATABASE {BENCH_DATABASE}"))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rows = runtime.block_on(phase1_rows(args, &bin, &dir, &bench_url, have_pgbench))?;

    let results = Results {
        benchmark: "phase1: POST /orders",
        concurrency: args.concurrency,
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rows,
    };
    print_table(&results);
    if !have_pgbench {
        println!("(pgbench is not installed, so there is no database baseline row)");
    }
    let json = process::target_dir().join("bench/phase1.json");
    std::fs::write(&json, serde_json::to_string_pretty(&results)? + "\n")?;
    println!(
        "\nwritten to {} (logs in {})",
        json.display(),
        dir.display()
    );
    Ok(serde_json::to_value(results.summary())?)
}

/// Phase 1's headline figures: `POST /orders` on PostgreSQL against pgbench running
/// the same SQL at the same concurrency.
#[derive(Debug, Serialize)]
struct Summary {
    orders_per_s: Option<f64>,
    pgbench_tps: Option<f64>,
    ratio: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl Results {
    fn summary(&self) -> Summary {
        let row = |name: &str| self.rows.iter().find(|r| r.name.starts_with(name));
        let postgres = row(POSTGRES_ROW);
        let pgbench = row(PGBENCH_ROW);
        Summary {
            orders_per_s: postgres.map(|r| r.per_second),
            pgbench_tps: pgbench.map(|r| r.per_second),
            ratio: postgres
                .zip(pgbench)
                .map(|(p, b)| p.per_second / b.per_second),
            p50_ms: postgres.map(|r| r.p50_ms),
            p99_ms: postgres.map(|r| r.p99_ms),
        }
    }
}

async fn phase1_rows(
    args: &BenchArgs,
    bin: &Path,
    dir: &Path,
    bench_url: &str,
    have_pgbench: bool,
) -> anyhow::Result<Vec<Row>> {
    let concurrency = usize::from(args.concurrency);
    let provider_addr = free_local_addr()?;
    let mut provider = Server::start(
        "payment provider",
        bin,
        &["provider", "--provider-addr", &provider_addr.to_string()]
            .into_iter()
            .chain(PERFECT_PROVIDER)
            .collect::<Vec<_>>(),
        provider_addr,
        &dir.join("provider.log"),
    )?;
    provider
        .wait_for("/health", Duration::from_secs(30))
        .await?;

    let mut rows = Vec::new();
    let sqlite_url = format!("sqlite://{}", dir.join("bench.db").display());
    for (name, database_url) in [("sqlite", sqlite_url.as_str()), (POSTGRES_ROW, bench_url)] {
        let addr = free_local_addr()?;
        let mut server = Server::start(
            name,
            bin,
            &[
                "--addr",
                &addr.to_string(),
                "--database-url",
                database_url,
                "--payment-url",
                &format!("http://{provider_addr}"),
            ],
            addr,
            &dir.join(format!("{name}.log")),
        )?;
        server.wait_for("/ready", Duration::from_secs(60)).await?;
        println!(
            "{name}: POST /orders with {concurrency} in flight: {:?} warm-up, {:?} measured…",
            args.warmup, args.duration
        );
        let load = Load {
            url: format!("http://{addr}/orders"),
            concurrency,
            warmup: args.warmup,
            duration: args.duration,
            body: |worker| order_body(worker as u64),
        };
        let limit = args.warmup + args.duration + Duration::from_secs(30);
        let report = tokio::time::timeout(limit, closed::closed_loop(&load))
            .await
            .with_context(|| format!("{name}: the load run did not end within {limit:?}"))??;
        server.stop().await;
        if let Some(error) = &report.first_error {
            eprintln!("{name}: {} errors; the first: {error}", report.errors);
        }
        rows.push(Row::new(
            name,
            report.ok as f64 / report.elapsed.as_secs_f64(),
            &report.latency_us,
            report.errors,
        ));
    }
    provider.stop().await;

    // After the PostgreSQL run: the service's migrations created the schema.
    if have_pgbench {
        println!(
            "pgbench: the same SQL with {concurrency} clients, {:?}…",
            args.duration
        );
        let report = pgbench::run(
            bench_url,
            pgbench::PHASE1_ORDER,
            concurrency,
            args.duration,
            dir,
        )
        .await?;
        rows.push(Row::new(
            PGBENCH_ROW,
            report.tps,
            &report.latency_us,
            report.failed,
        ));
    }
    Ok(rows)
}

/// A port nobody listens on right now. (Another program could take it before the
/// server binds it; on a workstation that is rare enough, and it fails loudly.)
pub(crate) fn free_local_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?)
}

/// A child process serving HTTP on 127.0.0.1, killed when dropped.
#[derive(Debug)]
pub(crate) struct Server {
    name: String,
    child: tokio::process::Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    pub(crate) fn start(
        name: &str,
        bin: &Path,
        args: &[&str],
        addr: SocketAddr,
        log: &Path,
    ) -> anyhow::Result<Server> {
        Server::start_with_env(name, bin, args, &[], addr, log)
    }

    /// [`Server::start`], with `env` changed for the child: `(name, Some(value))` sets
    /// a variable, `(name, None)` removes one it would inherit.
    pub(crate) fn start_with_env(
        name: &str,
        bin: &Path,
        args: &[&str],
        env: &[(String, Option<String>)],
        addr: SocketAddr,
        log: &Path,
    ) -> anyhow::Result<Server> {
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let set: String = env
            .iter()
            .filter_map(|(key, value)| Some(format!("{key}={} ", value.as_ref()?)))
            .collect();
        println!(
            "$ RUST_LOG=warn {set}{} {} > {}",
            bin.display(),
            args.join(" "),
            log.display()
        );
        let mut command = tokio::process::Command::new(bin);
        for (key, value) in env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let child = command
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("could not start {}", bin.display()))?;
        Ok(Server {
            name: name.to_owned(),
            child,
            addr,
            log: log.to_owned(),
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Polls `GET path` until it answers 200, the process exits, or `limit` passes.
    pub(crate) async fn wait_for(&mut self, path: &str, limit: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("http://{}{path}", self.addr);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before GET {url} answered 200; end of {}:\n{}",
                    self.name,
                    self.log.display(),
                    process::tail(&self.log, 20)
                );
            }
            if let Ok(response) = client.get(&url).send().await
                && response.status() == reqwest::StatusCode::OK
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: GET {url} did not answer 200 within {limit:?}; end of {}:\n{}",
                    self.name,
                    self.log.display(),
                    process::tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    /// A graceful stop, as an operator would do it: SIGTERM, then up to `grace` for
    /// the server to finish (consumers commit their offsets), then SIGKILL.
    pub(crate) async fn terminate(mut self, grace: Duration) {
        if let Ok(None) = self.child.try_wait()
            && let Some(pid) = self.child.id()
        {
            println!("$ kill -s TERM {pid}   # {}", self.name);
            if process::signal(pid, "TERM").is_ok()
                && let Ok(Ok(status)) = tokio::time::timeout(grace, self.child.wait()).await
            {
                if !status.success() {
                    eprintln!(
                        "{} exited with {status} after SIGTERM; end of {}:\n{}",
                        self.name,
                        self.log.display(),
                        process::tail(&self.log, 10)
                    );
                }
                return;
            }
            eprintln!(
                "{} did not stop within {grace:?} of SIGTERM: killing it",
                self.name
            );
        }
        self.stop().await;
    }

    /// The process still runs (it did not crash under load).
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); end of {}:\n{}",
                self.name,
                self.log.display(),
                process::tail(&self.log, 20)
            );
        }
        Ok(())
    }
}

#[derive(Debug, Serialize)]
struct Results {
    benchmark: &'static str,
    concurrency: u16,
    duration_s: f64,
    warmup_s: f64,
    cores: usize,
    rows: Vec<Row>,
}

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    /// Successful requests (or transactions) per second.
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
}

impl Row {
    fn new(name: &str, per_second: f64, latency_us: &Histogram<u64>, errors: u64) -> Row {
        let ms = |us: u64| us as f64 / 1000.0;
        Row {
            name: name.to_owned(),
            per_second,
            p50_ms: ms(latency_us.value_at_quantile(0.50)),
            p99_ms: ms(latency_us.value_at_quantile(0.99)),
            max_ms: ms(latency_us.max()),
            errors,
        }
    }
}

fn print_table(results: &Results) {
    println!(
        "\n{}: closed loop, concurrency {}, {:.1} s measured after {:.1} s warm-up, \
         {} cores (shared by load generator, servers and database)\n",
        results.benchmark, results.concurrency, results.duration_s, results.warmup_s, results.cores
    );
    println!(
        "{:<38} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "", "req|tx/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    for row in &results.rows {
        println!(
            "{:<38} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            row.name, row.per_second, row.p50_ms, row.p99_ms, row.max_ms, row.errors
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_body_is_valid_json() {
        let body: serde_json::Value = serde_json::from_str(&order_body(7)).unwrap();
        assert_eq!(body["customer_id"], "bench-7");
        assert_eq!(body["items"][1]["qty"], 2);
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        Cli::command().debug_assert();
    }
}
