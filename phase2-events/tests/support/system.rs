//! A whole phase 2 system for one test: four fresh databases, a topic namespace of
//! its own on the broker, the provider simulator, the relays and the chosen services,
//! all in this process (a scenario may run one of them as a separate process).

use common::domain::OrderId;
use common::payment::{LatencyRange, Simulator};
use common::shutdown::CancellationToken;
use common::testing::{Backend, TestDb};
use phase2_events::config::Settings;
use phase2_events::flow::Topics;
use phase2_events::relay::RelayFaults;
use phase2_events::services::delivery::DeliveryService;
use phase2_events::services::inventory::InventoryService;
use phase2_events::services::notification::NotificationService;
use phase2_events::services::order::OrderService;
use phase2_events::services::payment::PaymentService;
use phase2_events::system::Relays;
use serde_json::{Value, json};
use sqlx::AnyPool;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

pub const ALL: &[&str] = &["order", "payment", "inventory", "notification", "delivery"];

/// What a test may change before the system starts.
#[derive(Debug, Clone)]
pub struct Options {
    pub services: &'static [&'static str],
    pub decline_rate: f64,
    pub provider_latency: LatencyRange,
    /// Another broker (a test's own `LocalCluster`, maybe through a proxy); default:
    /// `KAFKA_BROKERS`.
    pub brokers: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            services: ALL,
            decline_rate: 0.0,
            provider_latency: LatencyRange::ZERO,
            brokers: None,
        }
    }
}

#[derive(Debug)]
pub struct TestSystem {
    pub settings: Settings,
    pub topics: Topics,
    pub order_url: String,
    pub notification_addr: Option<std::net::SocketAddr>,
    pub provider_url: String,
    pub simulator: Simulator,
    pub relay_faults: Vec<Arc<RelayFaults>>,
    pub orders_db: AnyPool,
    pub payments_db: AnyPool,
    pub inventory_db: AnyPool,
    pub http: reqwest::Client,
    dbs: Vec<TestDb>,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl TestSystem {
    pub async fn start(options: Options) -> TestSystem {
        let mut dbs = Vec::new();
        for _ in 0..4 {
            dbs.push(TestDb::create(Backend::Postgres).await);
        }
        let namespace = format!("t{}", uuid::Uuid::now_v7().simple());
        super::sweep_once(
            &options
                .brokers
                .clone()
                .unwrap_or_else(phase2_events::kafka::brokers),
        )
        .await;
        let urls = [&dbs[0].url, &dbs[1].url, &dbs[2].url, &dbs[3].url].map(String::as_str);
        let mut settings = Settings::for_tests(&namespace, urls);
        if let Some(brokers) = &options.brokers {
            settings.brokers = brokers.clone();
        }
        settings.provider.decline_rate = options.decline_rate;
        settings.provider.latency = options.provider_latency;
        settings.payment.attempt_timeout = Duration::from_secs(2);
        settings.payment.deadline = Duration::from_secs(5);

        // Every schema exists from the start, whichever services run (a test may
        // start one later, or run it as a separate process).
        use phase2_events::services::{delivery, inventory, open_database, order, payment};
        for (url, migrators) in [
            (&settings.order_database_url, order::migrators()),
            (&settings.payment_database_url, payment::migrators()),
            (&settings.inventory_database_url, inventory::migrators()),
            (&settings.delivery_database_url, delivery::migrators()),
        ] {
            open_database(url, 1, migrators)
                .await
                .unwrap()
                .close()
                .await;
        }
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let provider = phase2_events::system::Provider::build(&settings)
            .await
            .unwrap();
        let provider_url = provider.url();
        let simulator = provider.simulator().clone();
        settings.payment_url = Some(provider_url.clone());
        tasks.spawn(provider.run(shutdown.clone()));

        let fail = |what: &str, err: anyhow::Error| -> ! {
            panic!(
                "starting the {what} failed: {err:#}\nThe phase 2 tests need PostgreSQL, Redis and \
                 Apache Kafka: start them with `cargo xtask up`."
            )
        };
        let relays = Relays::build(&settings)
            .await
            .unwrap_or_else(|e| fail("relays", e));
        let relay_faults = relays.faults();
        tasks.spawn(relays.run(shutdown.clone()));
        // The order and inventory databases exist once their services were built (or
        // by the relays' migrations).
        let orders_db = common::db::connect(&dbs[0].url, 3).await.unwrap();
        let payments_db = common::db::connect(&dbs[1].url, 3).await.unwrap();
        let inventory_db = common::db::connect(&dbs[2].url, 3).await.unwrap();
        let mut system = TestSystem {
            topics: Topics::new(&namespace),
            settings,
            order_url: String::new(),
            notification_addr: None,
            provider_url,
            simulator,
            relay_faults,
            orders_db,
            payments_db,
            inventory_db,
            http: reqwest::Client::new(),
            dbs,
            shutdown,
            tasks,
        };
        for service in options.services {
            system.start_service(service).await;
        }
        system
    }

    /// Starts one more service in this process (e.g. one that was left out at first,
    /// or a second instance).
    pub async fn start_service(&mut self, service: &str) {
        let fail = |err: anyhow::Error| -> ! {
            panic!(
                "starting the {service} service failed: {err:#}\nThe phase 2 tests need \
                 PostgreSQL, Redis and Apache Kafka: start them with `cargo xtask up`."
            )
        };
        let settings = &self.settings;
        let stop = self.shutdown.clone();
        match service {
            "order" => {
                let s = OrderService::build(settings)
                    .await
                    .unwrap_or_else(|e| fail(e));
                self.order_url = format!("http://{}", s.addr());
                self.tasks.spawn(s.run(stop));
            }
            "payment" => {
                let s = PaymentService::build(settings)
                    .await
                    .unwrap_or_else(|e| fail(e));
                self.tasks.spawn(s.run(stop));
            }
            "inventory" => {
                let s = InventoryService::build(settings)
                    .await
                    .unwrap_or_else(|e| fail(e));
                self.tasks.spawn(s.run(stop));
            }
            "notification" => {
                let s = NotificationService::build(settings)
                    .await
                    .unwrap_or_else(|e| fail(e));
                self.notification_addr = Some(s.addr());
                self.tasks.spawn(s.run(stop));
            }
            "delivery" => {
                let s = DeliveryService::build(settings)
                    .await
                    .unwrap_or_else(|e| fail(e));
                self.tasks.spawn(s.run(stop));
            }
            other => panic!("no service {other}"),
        }
    }

    /// Environment for running one service of this system as a separate process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let s = &self.settings;
        vec![
            ("KAFKA_BROKERS", s.brokers.clone()),
            ("TOPIC_NAMESPACE", s.namespace.clone()),
            ("ORDER_DATABASE_URL", s.order_database_url.clone()),
            ("PAYMENT_DATABASE_URL", s.payment_database_url.clone()),
            ("INVENTORY_DATABASE_URL", s.inventory_database_url.clone()),
            ("DELIVERY_DATABASE_URL", s.delivery_database_url.clone()),
            ("PAYMENT_URL", self.provider_url.clone()),
            ("PAYMENT_ATTEMPT_TIMEOUT", "2s".into()),
            ("PAYMENT_DEADLINE", "5s".into()),
            ("DB_MAX_CONNECTIONS", "5".into()),
            ("RUST_LOG", "info".into()),
        ]
    }

    pub fn payments_db(&self) -> sqlx::AnyPool {
        self.payments_db.clone()
    }

    /// Sets the stock of `sku` (before orders for it arrive).
    pub async fn set_stock(&self, sku: &str, available: i64) {
        sqlx::query("UPDATE stock SET available = $1 WHERE sku = $2")
            .bind(available)
            .bind(sku)
            .execute(&self.inventory_db)
            .await
            .unwrap();
    }

    pub async fn stock(&self) -> BTreeMap<String, i64> {
        use sqlx::Row;
        sqlx::query("SELECT sku, available FROM stock")
            .fetch_all(&self.inventory_db)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("sku"), r.get("available")))
            .collect()
    }

    /// `POST /orders`; returns the HTTP status and the body.
    pub async fn post_order(&self, body: &Value, key: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/orders", self.order_url))
            .json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.expect("order API reachable");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Places an order of `items` (`[(sku, qty)]`); returns its id once accepted (202).
    pub async fn place(&self, items: &[(&str, u8)]) -> OrderId {
        let items: Vec<Value> = items
            .iter()
            .map(|(sku, qty)| json!({"sku": sku, "qty": qty}))
            .collect();
        let (status, body) = self
            .post_order(&json!({"customer_id": "cust-1", "items": items}), None)
            .await;
        assert_eq!(status, 202, "order accepted: {body}");
        body["id"].as_str().unwrap().parse().unwrap()
    }

    /// The relays of every database publish each event twice from now on.
    pub fn duplicate_every_event(&self) {
        for faults in &self.relay_faults {
            faults
                .duplicate_publishes
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Stops every service, removes the databases and deletes the topics.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while let Some(done) = self.tasks.join_next().await {
            done.unwrap().unwrap();
        }
        phase2_events::kafka::delete_namespace(&self.settings.brokers, &self.settings.namespace)
            .await
            .unwrap();
        self.orders_db.close().await;
        self.payments_db.close().await;
        self.inventory_db.close().await;
        for db in self.dbs {
            db.drop_database().await;
        }
    }
}
