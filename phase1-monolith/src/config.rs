//! Command line and environment: every option has a flag and an environment variable
//! (`--help` lists both), so the same binary is configured the same way by a learner
//! at a terminal, by a test, and by a container.

use clap::{Args, Parser, Subcommand};
use common::payment::{PaymentClientConfig, SimulatorConfig};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "phase1-monolith",
    version,
    about = "FerrisEats phase 1: a resilient order API with a payment provider simulator",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run only the payment provider simulator (e.g. in its own terminal, so it
    /// survives a `kill -9` of the order API).
    Provider(SimulatorConfig),
}

/// Settings of the order API (the default command).
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address of the order API.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,
    /// sqlite://FILE (zero setup; created if missing) or postgres://USER:PASS@HOST/DB.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://ferriseats-phase1.db"
    )]
    pub database_url: String,
    /// Maximum database connections.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,
    /// Use a payment provider that is already running instead of starting the
    /// simulator in this process (e.g. http://127.0.0.1:3001).
    #[arg(long, env = "PAYMENT_URL")]
    pub payment_url: Option<String>,
    #[command(flatten)]
    pub provider: SimulatorConfig,
    #[command(flatten)]
    pub payment: PaymentClientConfig,
    /// How often the reconciler looks for in-doubt orders.
    #[arg(long, env = "RECONCILE_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub reconcile_interval: Duration,
    /// An order `placed` for longer than this is in doubt and gets reconciled. Must be
    /// longer than --payment-deadline.
    #[arg(long, env = "RECONCILE_AFTER", default_value = "20s", value_parser = humantime::parse_duration)]
    pub reconcile_after: Duration,
    /// Requests running longer than this are answered 503.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Largest accepted request body in bytes (413 above).
    #[arg(long, env = "BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,
}

impl Settings {
    /// How long a repeated `Idempotency-Key` request waits for the first one's answer:
    /// as long as the first one may take to pay, plus a margin.
    pub fn replay_wait(&self) -> Duration {
        self.payment.deadline + Duration::from_secs(2)
    }

    /// Settings are checked as a whole once, at startup, with messages that say what to change.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.reconcile_after > self.payment.deadline,
            "--reconcile-after ({:?}) must be longer than --payment-deadline ({:?}), \
             or the reconciler would race requests that are still retrying",
            self.reconcile_after,
            self.payment.deadline
        );
        anyhow::ensure!(
            self.request_timeout > self.replay_wait(),
            "--request-timeout ({:?}) must be longer than --payment-deadline ({:?}) + 2 s: \
             a repeated Idempotency-Key request may wait that long for the first one's answer",
            self.request_timeout,
            self.payment.deadline
        );
        for (name, rate) in [
            ("--payment-failure-rate", self.provider.failure_rate),
            ("--payment-decline-rate", self.provider.decline_rate),
            (
                "--breaker-failure-threshold",
                self.payment.breaker_failure_threshold,
            ),
        ] {
            anyhow::ensure!(
                (0.0..=1.0).contains(&rate),
                "{name} must be within 0..=1 (got {rate})"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_option_is_documented_and_reads_an_environment_variable() {
        let cli = Cli::command();
        let provider = cli.find_subcommand("provider").unwrap().clone();
        for command in [&cli, &provider] {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    arg.get_env().is_some(),
                    "--{id} has no environment variable"
                );
                assert!(arg.get_help().is_some(), "--{id} has no help text");
            }
        }
    }

    #[test]
    fn defaults_follow_the_failure_design() {
        let cli = Cli::try_parse_from(["phase1-monolith"]).unwrap();
        let s = cli.settings;
        assert_eq!(s.provider.failure_rate, 0.3);
        assert_eq!(s.provider.latency.min, Duration::from_secs(2));
        assert_eq!(s.provider.latency.max, Duration::from_secs(5));
        assert!(s.payment.idempotency);
        s.validate().expect("defaults are consistent");
    }

    #[test]
    fn the_provider_runs_alone_as_a_subcommand() {
        let cli =
            Cli::try_parse_from(["phase1-monolith", "provider", "--payment-latency", "0"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Provider(c)) if c.latency.max.is_zero()));
    }

    #[test]
    fn inconsistent_timeouts_are_refused_with_a_reason() {
        let cli = Cli::try_parse_from(["phase1-monolith", "--reconcile-after", "5s"]).unwrap();
        let err = cli.settings.validate().unwrap_err().to_string();
        assert!(err.contains("--payment-deadline"), "{err}");
    }
}
