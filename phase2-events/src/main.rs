//! `phase2-events` — the phase 2 services and tools.
//!
//! ```text
//! phase2-events all                      # every service in one process (quick start)
//! phase2-events order | payment | inventory | notification | delivery | relay
//! phase2-events provider                 # the payment provider simulator alone
//! phase2-events dlq list   --topic orders
//! phase2-events dlq replay --topic orders
//! ```

use clap::{Parser, Subcommand};
use common::payment::SimulatorConfig;
use phase2_events::config::Settings;
use phase2_events::services::delivery::DeliveryService;
use phase2_events::services::inventory::InventoryService;
use phase2_events::services::notification::NotificationService;
use phase2_events::services::order::OrderService;
use phase2_events::services::payment::PaymentService;
use phase2_events::system::{Relays, System};

#[derive(Debug, Parser)]
#[command(
    name = "phase2-events",
    version,
    about = "FerrisEats phase 2: event-driven services over Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every service, the relays and (unless --payment-url) the provider simulator.
    All(Box<Settings>),
    /// The order API (127.0.0.1:3000) and the saga consumer.
    Order(Box<Settings>),
    /// Charges on OrderPlaced, refunds on OrderCancelled.
    Payment(Box<Settings>),
    /// Reserves stock on OrderPlaced, releases it on OrderCancelled.
    Inventory(Box<Settings>),
    /// Notifies once per status change; WebSocket live status (127.0.0.1:3002).
    Notification(Box<Settings>),
    /// Drives confirmed orders to delivered.
    Delivery(Box<Settings>),
    /// Publishes every service's outbox to Kafka.
    Relay(Box<Settings>),
    /// The payment provider simulator alone (127.0.0.1:3001).
    Provider(SimulatorConfig),
    /// Inspect and re-drive dead letters.
    #[command(subcommand)]
    Dlq(Dlq),
}

#[derive(Debug, Subcommand)]
enum Dlq {
    /// Print every dead letter of TOPIC (read from TOPIC.dlq) as one JSON line each.
    List(DlqArgs),
    /// Publish the dead letters of TOPIC not replayed before back to TOPIC.
    Replay(DlqArgs),
}

#[derive(Debug, clap::Args)]
struct DlqArgs {
    /// The source topic, e.g. `orders` (its dead letters are on `<topic>.dlq`).
    #[arg(long, env = "DLQ_TOPIC")]
    topic: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::telemetry::init_json_logs();
    // Logged as "fatal", then one line on stderr: the last a learner sees (e.g.
    // "error: cannot reach Kafka at 127.0.0.1:9092 (connection refused): start it
    // with `cargo xtask up`").
    common::telemetry::exit_code(run(Cli::parse().command).await)
}

async fn run(command: Command) -> anyhow::Result<()> {
    let shutdown = common::shutdown::on_signal();
    match command {
        Command::All(settings) => System::build(*settings).await?.run(shutdown).await,
        Command::Order(settings) => OrderService::build(&settings).await?.run(shutdown).await,
        Command::Payment(settings) => PaymentService::build(&settings).await?.run(shutdown).await,
        Command::Inventory(settings) => {
            InventoryService::build(&settings)
                .await?
                .run(shutdown)
                .await
        }
        Command::Notification(settings) => {
            NotificationService::build(&settings)
                .await?
                .run(shutdown)
                .await
        }
        Command::Delivery(settings) => DeliveryService::build(&settings).await?.run(shutdown).await,
        Command::Relay(settings) => Relays::build(&settings).await?.run(shutdown).await,
        Command::Provider(config) => {
            let listener = common::http::listen(
                config.addr,
                "the payment provider simulator",
                "--provider-addr",
            )
            .await?;
            common::payment::Simulator::new(&config)
                .serve(listener, shutdown)
                .await?;
            Ok(())
        }
        Command::Dlq(Dlq::List(args)) => {
            phase2_events::kafka::check_reachable(&args.brokers).await?;
            let dlq = phase2_events::consumer::dlq_topic(&args.topic);
            for letter in phase2_events::dlq::list(&args.brokers, &dlq)? {
                println!("{}", serde_json::to_string(&letter)?);
            }
            Ok(())
        }
        Command::Dlq(Dlq::Replay(args)) => {
            phase2_events::kafka::check_reachable(&args.brokers).await?;
            let dlq = phase2_events::consumer::dlq_topic(&args.topic);
            let producer = phase2_events::kafka::producer(&args.brokers)?;
            let replayed = phase2_events::dlq::replay(&args.brokers, &dlq, &producer).await?;
            eprintln!(
                "replayed {replayed} dead letters from {dlq} to {}",
                args.topic
            );
            Ok(())
        }
    }
}
