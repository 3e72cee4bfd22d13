//! Command line and environment. One `Settings` for every service, so `all` and the
//! single-service subcommands are configured the same way; each service reads only
//! what it needs. Every option has a flag and an environment variable (`--help`).

use crate::flow::Service;
use common::payment::{PaymentClientConfig, SimulatorConfig};
use std::net::SocketAddr;
use std::time::Duration;

/// The local PostgreSQL server with a database per service (created when missing).
const PG: &str = "postgres://postgres:postgres@127.0.0.1:5432";

/// What a consumer does with an event when its database cannot be reached at all
/// ([`crate::consumer::database_unreachable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WhenUnreachable {
    /// Pause the partitions, probe the database, resume when it answers.
    Pause,
    /// Send the event to the retry topic, like any transient failure.
    Retry,
}

/// How the order API publishes `OrderPlaced`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Publish {
    /// In the order's transaction, to the outbox; the relay publishes it.
    Outbox,
    /// To Kafka after the commit (a dual write: lost when the broker is away).
    Direct,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Prefix of every topic and consumer group (`<namespace>.orders`), so several
    /// systems can share a broker. Empty: `orders`, `payments`, ….
    #[arg(long, env = "TOPIC_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// Partitions of each topic when the services create them.
    #[arg(long, env = "TOPIC_PARTITIONS", default_value_t = 3)]
    pub partitions: i32,
    /// Static group membership: this process's stable name in its consumer groups
    /// (`group.instance.id`). Restarted under the same name, it gets its partitions
    /// back at once — no waiting out the dead process's session, no rebalance of the
    /// others. Phase 4's supervisor gives each process its own (`order-1`,
    /// `payment`…); two processes must never share one (the broker fences the older).
    /// Unset: dynamic membership.
    #[arg(long, env = "CONSUMER_INSTANCE")]
    pub consumer_instance: Option<String>,
    /// What a consumer does when its database cannot be reached at all: `pause` its
    /// partitions and probe the database (the defence), or `retry` every event
    /// through the retry topic, as for any other transient failure (phase 4's
    /// `partition --no-defence`, to see the retry storm that prevents).
    #[arg(long, env = "CONSUMER_WHEN_DATABASE_UNREACHABLE", value_enum, default_value_t = WhenUnreachable::Pause)]
    pub when_database_unreachable: WhenUnreachable,
    /// How the order API hands `OrderPlaced` on: through the transactional `outbox`
    /// (the defence: the order and its event commit together), or `direct`ly to
    /// Kafka after the order's commit, giving up after 2 s — the dual write phase 2
    /// replaced, kept to show what it loses (phase 4's `broker-restart --no-defence`).
    #[arg(long, env = "ORDER_PUBLISH", value_enum, default_value_t = Publish::Outbox)]
    pub publish: Publish,
    /// Run a relay's loop again when it fails — its LISTEN and leader-lock
    /// connections die with the database server, and only a new loop opens new ones.
    /// `false` leaves it dead while the process carries on (phase 4's `db-restart
    /// --no-defence`).
    #[arg(long, env = "RELAY_RESTART", default_value_t = true, action = clap::ArgAction::Set)]
    pub relay_restart: bool,

    /// The order service's database.
    #[arg(long, env = "ORDER_DATABASE_URL", default_value_t = format!("{PG}/ferriseats_orders"))]
    pub order_database_url: String,
    /// The payment service's database.
    #[arg(long, env = "PAYMENT_DATABASE_URL", default_value_t = format!("{PG}/ferriseats_payments"))]
    pub payment_database_url: String,
    /// The inventory service's database.
    #[arg(long, env = "INVENTORY_DATABASE_URL", default_value_t = format!("{PG}/ferriseats_inventory"))]
    pub inventory_database_url: String,
    /// The delivery simulator's database.
    #[arg(long, env = "DELIVERY_DATABASE_URL", default_value_t = format!("{PG}/ferriseats_delivery"))]
    pub delivery_database_url: String,
    /// Maximum connections of each service's pool.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,
    /// Redis, for the notification service.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// Address of the order API.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,
    /// Address of the notification service (WebSocket `GET /orders/{id}/live`).
    #[arg(long, env = "NOTIFICATION_ADDR", default_value = "127.0.0.1:3002")]
    pub notification_addr: SocketAddr,
    /// Requests running longer than this are answered 503.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Largest accepted request body in bytes (413 above).
    #[arg(long, env = "BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,

    /// A payment provider that is already running. Unset: `all` starts the simulator
    /// in-process on --provider-addr, and `payment` expects it there.
    #[arg(long, env = "PAYMENT_URL")]
    pub payment_url: Option<String>,
    #[command(flatten)]
    pub provider: SimulatorConfig,
    #[command(flatten)]
    pub payment: PaymentClientConfig,

    /// Delivery simulator: confirmed → preparing after this long.
    #[arg(long, env = "DELIVERY_PREPARE_AFTER", default_value = "2s", value_parser = humantime::parse_duration)]
    pub prepare_after: Duration,
    /// Delivery simulator: preparing → out for delivery after this long.
    #[arg(long, env = "DELIVERY_DISPATCH_AFTER", default_value = "3s", value_parser = humantime::parse_duration)]
    pub dispatch_after: Duration,
    /// Delivery simulator: out for delivery → delivered after this long.
    #[arg(long, env = "DELIVERY_DELIVER_AFTER", default_value = "5s", value_parser = humantime::parse_duration)]
    pub deliver_after: Duration,

    /// The relay polls the outbox this often when no NOTIFY woke it.
    #[arg(long, env = "RELAY_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub relay_poll_interval: Duration,
    /// Orders under way at most: the order relay publishes a new `OrderPlaced` only
    /// while fewer orders than this are between published and final; the rest wait,
    /// accepted, in the outbox (see `relay.rs`). By Little's law the pipeline finishes
    /// at most this many per end-to-end latency: 512 allows 160 orders/s at 3 s, 36/s
    /// with the default 10 s of delivery delays. Too large, and a burst fills the
    /// pipeline with half-done orders before any finishes. 0: no window (watch an
    /// overload pile up).
    #[arg(long, env = "FLOW_WINDOW", default_value_t = 512)]
    pub flow_window: u32,
}

impl Settings {
    /// The provider's URL: `--payment-url`, or the simulator's address.
    pub fn payment_url(&self) -> String {
        self.payment_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.provider.addr))
    }

    /// Every option at its default, as `phase2-events all` runs with no flags (clap
    /// still reads the environment variables of this process, as the binary would).
    pub fn defaults() -> Settings {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            settings: Settings,
        }
        <Defaults as clap::Parser>::parse_from(["phase2-events"]).settings
    }

    /// A whole system inside a test: the defaults, then this topic namespace and these
    /// four databases (order, payment, inventory, delivery), the broker and Redis of
    /// `KAFKA_BROKERS`/`REDIS_URL`, ephemeral ports, a provider that never fails or
    /// declines, and delivery stages 50 ms apart. Tests change what they are about.
    pub fn for_tests(namespace: &str, databases: [&str; 4]) -> Settings {
        let mut s = Settings::defaults();
        s.brokers = crate::kafka::brokers();
        s.redis_url = common::endpoints::REDIS.url();
        s.namespace = namespace.to_owned();
        let [order, payment, inventory, delivery] = databases;
        s.order_database_url = order.to_owned();
        s.payment_database_url = payment.to_owned();
        s.inventory_database_url = inventory.to_owned();
        s.delivery_database_url = delivery.to_owned();
        s.db_max_connections = 5;
        let ephemeral: SocketAddr = ([127, 0, 0, 1], 0).into();
        s.addr = ephemeral;
        s.notification_addr = ephemeral;
        s.provider.addr = ephemeral;
        s.provider.failure_rate = 0.0;
        s.provider.decline_rate = 0.0;
        s.payment.backoff_base = Duration::from_millis(50);
        s.prepare_after = Duration::from_millis(50);
        s.dispatch_after = Duration::from_millis(50);
        s.deliver_after = Duration::from_millis(50);
        s.relay_poll_interval = Duration::from_millis(200);
        s
    }

    /// Every service database, by service name (the relay publishes each outbox).
    pub fn databases(&self) -> [(Service, &str); 4] {
        [
            (Service::Order, &self.order_database_url),
            (Service::Payment, &self.payment_database_url),
            (Service::Inventory, &self.inventory_database_url),
            (Service::Delivery, &self.delivery_database_url),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        settings: Settings,
    }

    #[test]
    fn every_option_has_help_and_an_environment_variable() {
        let command = Wrapper::command();
        for arg in command.get_arguments() {
            if ["help", "version"].contains(&arg.get_id().as_str()) {
                continue;
            }
            assert!(arg.get_help().is_some(), "--{} has no help", arg.get_id());
            assert!(arg.get_env().is_some(), "--{} has no env var", arg.get_id());
        }
    }

    #[test]
    fn defaults_give_each_service_its_own_database() {
        let settings = Wrapper::parse_from(["x"]).settings;
        let names: std::collections::HashSet<_> =
            settings.databases().iter().map(|(_, url)| *url).collect();
        assert_eq!(names.len(), 4);
        assert_eq!(settings.payment_url(), "http://127.0.0.1:3001");
    }
}
