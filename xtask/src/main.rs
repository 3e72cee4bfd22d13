//! `cargo xtask …` — the project's own automation, written in Rust.
//!
//! The [xtask pattern](https://github.com/matklad/cargo-xtask): instead of shell
//! scripts or a Makefile, a small binary crate in the workspace, run through the
//! alias in `.cargo/config.toml`. It works wherever `cargo` works, is type-checked
//! and linted like the rest of the code, and can be read like the rest of the code.
//!
//! | command | module |
//! |---|---|
//! | `cargo xtask doctor` | [`doctor`]: one line per thing the workshop needs (toolchain, C compiler, Java/Maven, Node.js, Python, the servers), `ok` or `fix` with what to run |
//! | `cargo xtask up [--observability] [--brokers 3]` / `down` / `status` | [`services`] (the generic flow), [`postgres`], [`redis`], [`kafka`] (with `common_local::local_kafka`), [`prometheus`] |
//! | `cargo xtask broker restart [--down-for 5s]` / `kill N` / `start N` | [`kafka`] |
//! | `cargo xtask test [-- ARGS]` | [`test`] |
//! | `cargo xtask book [--serve]` | [`book`] (a pinned mdBook, installed once) |
//! | `cargo xtask bench [phase1\|phase2\|phase3] [FLAGS]` | runs `phase4-chaos bench …` in release mode (the benchmarks are phase 4's library: `phase4-chaos/src/bench/`) |
//! | `cargo xtask prefetch [--skip-build]` | [`prefetch`]: a list of steps downloading and building everything the workshop needs (with the installers of `up`, `test` and `book`), so a room can work offline |
//! | `cargo xtask reset [--exercises]` | [`reset`]: the workshop's databases, topics, Redis keys and run state in `.ferriseats/` removed (DeleteTopics from `common_local::local_kafka::topics`); installed tools and running services kept |
//!
//! This file only parses the command line and dispatches — after one check that
//! comes before everything: a Rust older than the workspace's `rust-version` stops
//! every command but `doctor` with one line, "Rust 1.94 or newer is needed, this is
//! 1.88.0: run `rustup update stable`" ([`doctor::toolchain`]). So that this line can
//! be printed at all, xtask and `common-local` ask for an older Rust than the rest of
//! the workspace (their `Cargo.toml`s say why).

mod book;
mod doctor;
mod footprint;
mod kafka;
mod postgres;
mod prefetch;
mod process;
mod prometheus;
mod redis;
mod reset;
mod services;
mod test;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "FerrisEats project automation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A newcomer's first command: one line per thing the workshop needs — the Rust
    /// toolchain, a C compiler, Java and Maven (Kafka), Node.js and Python (the test
    /// suite's tools), PostgreSQL, Redis and Kafka running — each `ok`, or `fix` with
    /// what to run. Exit status 1 when something needs fixing.
    Doctor,
    /// Make local infrastructure available on its standard port: reuse what is
    /// running, start what is installed, install what is missing (where possible).
    Up(UpArgs),
    /// Stop the services that `cargo xtask up` started (never one it found running).
    Down,
    /// One line per service: address, up/down, and who started it.
    Status,
    /// The Kafka broker that `up` started: `restart` crashes it (SIGKILL) and starts it
    /// again on the same storage; `kill N` / `start N` do it to one node of three.
    /// For chaos scenarios.
    Broker(kafka::BrokerArgs),
    /// `up`, then the whole test suite (nextest if installed, plus doctests).
    Test(test::TestArgs),
    /// Build the workshop's book (docs/) with a pinned mdBook, installed once;
    /// `--serve` serves it on http://127.0.0.1:3400.
    Book(book::BookArgs),
    /// Download and build everything the workshop needs, so a room can work offline
    /// afterwards.
    ///
    /// Crates, the workspace's debug and release builds, PostgreSQL, Redis, Kafka and
    /// Prometheus (installed, not started), the test suite's tools and the book's
    /// mdBook. Each step prints one line with its duration and what it fetched; a
    /// failed step says what to do, the others still run, and the exit status is
    /// non-zero. Running it again only does what is missing.
    Prefetch(prefetch::PrefetchArgs),
    /// Back to a clean state in seconds: the workshop's databases, topics, Redis keys
    /// and run state removed; installed tools kept, services left running.
    ///
    /// Drops phase 2's databases (phases 3 and 4 use the same), phase 1's tables and
    /// SQLite file and leftover benchmark databases; deletes the Kafka topics orders,
    /// payments, inventory and delivery with their .retry and .dlq, and the
    /// notification service's Redis keys; removes run state from .ferriseats/ (chaos
    /// runs, rehearsals, the game day's answer; logs emptied). Only these default
    /// names: never a test's. Installed tools, Kafka's installation and storage and
    /// started.json are kept, and the services keep running (`cargo xtask down` stops
    /// them). Refuses, touching nothing, while a phase is connected to its databases;
    /// do not run it during `cargo xtask test` or a game day.
    Reset(reset::ResetArgs),
    /// What each phase's `all` costs: CPU and memory of its processes idle and under
    /// phase 4's load generator (`--rate`, default 50 requests/s), and of PostgreSQL,
    /// Redis and Kafka in the same windows. Debug builds, as `cargo run` makes them;
    /// prints the README's footprint table.
    Footprint(footprint::FootprintArgs),
    /// A chaos scenario under load, ending in a verdict: builds and runs
    /// `phase4-chaos scenario ARGS` (`cargo xtask chaos kill-service`, `--all`); the
    /// exit status is the verdict's (0 pass, 1 fail, 2 not judged).
    #[command(disable_help_flag = true)]
    Chaos {
        /// Passed on to `phase4-chaos scenario`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Throughput and latency percentiles, next to pgbench running the same SQL:
    /// builds and runs `phase4-chaos bench ARGS` (`cargo xtask bench --help` lists them).
    #[command(disable_help_flag = true)]
    Bench {
        /// Passed on to `phase4-chaos bench`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Also Prometheus on 127.0.0.1:9090, scraping the phase-3 services with the
    /// rules in phase3-observability/deploy/prometheus/.
    #[arg(long)]
    observability: bool,
    /// Kafka nodes: 1 (on 9092), or 3 (on 9092–9094; topics keep 3 copies with
    /// min.insync.replicas=2, so one node can be lost).
    #[arg(long, default_value_t = 1)]
    brokers: u32,
}

/// The benchmarks live in phase 4's library (they need rdkafka, sqlx and the phases,
/// which `up` must not wait for): build it and the binaries it measures in release
/// mode — a debug build measures the compiler, not the design — and run it.
fn bench(args: &[String]) -> anyhow::Result<()> {
    let status = phase4("bench", args)?;
    if !status.success() {
        anyhow::bail!("`phase4-chaos bench` failed ({status})");
    }
    Ok(())
}

/// `phase4-chaos SUBCOMMAND ARGS` from a release build, in the workspace.
fn phase4(subcommand: &str, args: &[String]) -> anyhow::Result<std::process::ExitStatus> {
    process::build_bench_packages()?;
    let bin = process::target_dir().join("release/phase4-chaos");
    std::process::Command::new(&bin)
        .arg(subcommand)
        .args(args)
        .current_dir(process::workspace_root())
        .status()
        .with_context(|| format!("running {}", bin.display()))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Before anything else: nothing but `up` would work on an old toolchain, and
    // cargo's own refusal comes later, below a page of output.
    if !matches!(cli.command, Command::Doctor)
        && let Some(line) = doctor::refuse_old_toolchain()
    {
        eprintln!("error: {line}");
        return std::process::ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Doctor => doctor::run(),
        Command::Up(args) => services::up(args.observability, args.brokers),
        Command::Down => services::down(),
        Command::Status => services::status(),
        Command::Broker(args) => kafka::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Book(args) => book::run(&args),
        Command::Bench { args } => bench(&args),
        Command::Prefetch(args) => prefetch::run(&args),
        Command::Reset(args) => reset::run(&args),
        Command::Footprint(args) => footprint::run(&args),
        // The verdict's exit status, as it is: 1 fail, 2 not judged.
        Command::Chaos { args } => match phase4("scenario", &args) {
            Ok(status) => {
                return std::process::ExitCode::from(status.code().unwrap_or(2).clamp(0, 255) as u8);
            }
            Err(err) => Err(err),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nerror: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
