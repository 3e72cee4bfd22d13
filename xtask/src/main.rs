//! `cargo xtask …` — the project's own automation, written in Rust.
//!
//! The [xtask pattern](https://github.com/matklad/cargo-xtask): instead of shell
//! scripts or a Makefile, a small binary crate in the workspace, run through the
//! alias in `.cargo/config.toml`. It works wherever `cargo` works, is type-checked
//! and linted like the rest of the code, and can be read like the rest of the code.
//!
//! | command | module |
//! |---|---|
//! | `cargo xtask up [--observability] [--brokers 3]` / `down` / `status` | [`services`] (the generic flow), [`postgres`], [`redis`], [`kafka`] (with `common_local::local_kafka`), [`prometheus`] |
//! | `cargo xtask broker restart [--down-for 5s]` / `kill N` / `start N` | [`kafka`] |
//! | `cargo xtask test [-- ARGS]` | [`test`] |
//! | `cargo xtask bench [phase1\|phase2\|phase3]` | [`bench`], [`bench_phase2`], [`bench_phase3`], [`loadgen`], [`openloop`], [`pgbench`] |
//!
//! This file only parses the command line and dispatches.

mod bench;
mod bench_phase2;
mod bench_phase3;
mod kafka;
mod loadgen;
mod openloop;
mod pgbench;
mod postgres;
mod process;
mod prometheus;
mod redis;
mod services;
mod test;

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
    /// Throughput and latency percentiles, next to pgbench running the same SQL.
    Bench(bench::BenchArgs),
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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => services::up(args.observability, args.brokers),
        Command::Down => services::down(),
        Command::Status => services::status(),
        Command::Broker(args) => kafka::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Bench(args) => bench::run(&args),
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
