//! `phase2-events` — the phase-2 command line. Services arrive one by one; for now:
//!
//! ```text
//! phase2-events dlq list   --topic orders      # what is on orders.dlq, and why
//! phase2-events dlq replay --topic orders      # re-drive it once the cause is fixed
//! ```

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "phase2-events",
    version,
    about = "FerrisEats phase 2: event-driven services over Kafka"
)]
struct Cli {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    brokers: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect and re-drive dead letters.
    #[command(subcommand)]
    Dlq(Dlq),
}

#[derive(Debug, Subcommand)]
enum Dlq {
    /// Print every dead letter of TOPIC (read from TOPIC.dlq) as one JSON line each.
    List {
        /// The source topic (its dead letters are on `<topic>.dlq`).
        #[arg(long, env = "DLQ_TOPIC")]
        topic: String,
    },
    /// Publish the dead letters of TOPIC not replayed before back to TOPIC.
    Replay {
        /// The source topic (its dead letters are on `<topic>.dlq`).
        #[arg(long, env = "DLQ_TOPIC")]
        topic: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init_json_logs();
    let cli = Cli::parse();
    match cli.command {
        Command::Dlq(Dlq::List { topic }) => {
            let dlq = phase2_events::consumer::dlq_topic(&topic);
            for letter in phase2_events::dlq::list(&cli.brokers, &dlq)? {
                println!("{}", serde_json::to_string(&letter)?);
            }
        }
        Command::Dlq(Dlq::Replay { topic }) => {
            let dlq = phase2_events::consumer::dlq_topic(&topic);
            let producer = phase2_events::kafka::producer(&cli.brokers)?;
            let replayed = phase2_events::dlq::replay(&cli.brokers, &dlq, &producer).await?;
            eprintln!("replayed {replayed} dead letters from {dlq} to {topic}");
        }
    }
    Ok(())
}
