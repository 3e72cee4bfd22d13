//! `phase4-chaos`: phase 4's command line. `cargo xtask bench ARGS` runs
//! `phase4-chaos bench ARGS` in release mode.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "phase4-chaos",
    about = "FerrisEats phase 4: load, measurement and chaos"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Throughput and latency percentiles, next to pgbench running the same SQL.
    Bench(phase4_chaos::bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(args) => phase4_chaos::bench::run(&args),
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
