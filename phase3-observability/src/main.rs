//! `phase3-observability` — the phase 2 services, observed.
//!
//! ```text
//! phase3-observability all                  # everything in one process; ops on 127.0.0.1:9400
//! phase3-observability order | payment | inventory | notification | delivery | relay
//! phase3-observability incident list        # --ops http://127.0.0.1:9400
//! phase3-observability incident on payment-slowdown
//! phase3-observability incident off payment-slowdown
//! ```

use clap::{Parser, Subcommand};
use phase3_observability::client::{self, IncidentCommand};
use phase3_observability::node::{Observed, Role};

#[derive(Debug, Parser)]
#[command(
    name = "phase3-observability",
    version,
    about = "FerrisEats phase 3: the phase 2 services with metrics, traces and planned incidents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every service, the relays and the provider simulator; ops server on 9400.
    All(Box<Observed>),
    /// The order API (3000) and the saga; ops on 9401.
    Order(Box<Observed>),
    /// Charges and refunds; ops on 9402.
    Payment(Box<Observed>),
    /// Stock; ops on 9403.
    Inventory(Box<Observed>),
    /// Notifications and live status (3002); ops on 9404.
    Notification(Box<Observed>),
    /// Delivery; ops on 9405.
    Delivery(Box<Observed>),
    /// The outbox relays; ops on 9406.
    Relay(Box<Observed>),
    /// Switch the planned incidents of a running process.
    Incident {
        /// The process's ops server.
        #[arg(
            long,
            env = "OPS_URL",
            default_value = "http://127.0.0.1:9400",
            global = true
        )]
        ops: String,
        #[command(subcommand)]
        command: IncidentCommand,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One line on stderr for a failure (e.g. "error: cannot reach PostgreSQL at …:
    // start it with `cargo xtask up`"), logged as "fatal" too.
    common::telemetry::exit_code(run(Cli::parse().command).await)
}

async fn run(command: Command) -> anyhow::Result<()> {
    let (role, observed) = match command {
        Command::Incident { ops, command } => {
            for status in client::run(&ops, &command).await? {
                let state = if status.active { "ON " } else { "off" };
                println!("{state}  {:<22} {}", status.name, status.description);
            }
            return Ok(());
        }
        Command::All(o) => (Role::All, o),
        Command::Order(o) => (Role::Order, o),
        Command::Payment(o) => (Role::Payment, o),
        Command::Inventory(o) => (Role::Inventory, o),
        Command::Notification(o) => (Role::Notification, o),
        Command::Delivery(o) => (Role::Delivery, o),
        Command::Relay(o) => (Role::Relay, o),
    };
    phase3_observability::node::serve(role, *observed).await
}
