//! A whole phase 2 system for one test: four fresh databases, a topic namespace of
//! its own on the broker ([`Scratch`]), the provider simulator, the relays and the
//! chosen services, all in this process (a scenario may run one of them as a
//! separate process).

use crate::config::Settings;
use crate::flow::{Service, Topics};
use crate::relay::RelayFaults;
use crate::services::delivery::DeliveryService;
use crate::services::inventory::InventoryService;
use crate::services::notification::NotificationService;
use crate::services::order::OrderService;
use crate::services::payment::PaymentService;
use crate::system::Relays;
use common::domain::OrderId;
use common::payment::{LatencyRange, Simulator, SimulatorConfig};
use common::shutdown::CancellationToken;
use common::testing::{Backend, TestDb};
use serde_json::{Value, json};
use sqlx::AnyPool;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// What a test may change before the system starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// The services started in this process (all five by default).
    pub services: &'static [Service],
    pub decline_rate: f64,
    pub provider_latency: LatencyRange,
    /// Another broker (a test's own `LocalCluster`, maybe through a proxy); default:
    /// `KAFKA_BROKERS`.
    pub brokers: Option<String>,
    /// The payment provider and client as `phase2-events all` runs them by default
    /// (answers in 2–5 s, 30 % failures, 5 % declines; 6 s attempts, 15 s deadline)
    /// and its default pool size, instead of the quick, faultless test provider.
    /// `decline_rate` and `provider_latency` are then ignored.
    pub learner_defaults: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            services: &Service::ALL,
            decline_rate: 0.0,
            provider_latency: LatencyRange::ZERO,
            brokers: None,
            learner_defaults: false,
        }
    }
}

/// Fresh state for one system: four PostgreSQL databases (order, payment, inventory,
/// delivery), a topic namespace `t<uuid>` of its own, and [`Settings`] for tests
/// that point at them. [`Scratch::remove`] deletes the namespace's topics and drops
/// the databases.
#[derive(Debug)]
pub struct Scratch {
    pub settings: Settings,
    dbs: Vec<TestDb>,
}

impl Scratch {
    /// Creates the databases and names the namespace (the topics appear when the
    /// services create them). `brokers` overrides `KAFKA_BROKERS`. First deletes the
    /// topics earlier runs left behind (see [`super::sweep_once`]).
    pub async fn create(brokers: Option<String>) -> Scratch {
        let mut dbs = Vec::new();
        for _ in 0..4 {
            dbs.push(TestDb::create(Backend::Postgres).await);
        }
        let namespace = format!("t{}", uuid::Uuid::now_v7().simple());
        let brokers = brokers.unwrap_or_else(crate::kafka::brokers);
        super::sweep_once(&brokers).await;
        let urls = [&dbs[0].url, &dbs[1].url, &dbs[2].url, &dbs[3].url].map(String::as_str);
        let mut settings = Settings::for_tests(&namespace, urls);
        settings.brokers = brokers;
        Scratch { settings, dbs }
    }

    /// The topic namespace.
    pub fn namespace(&self) -> &str {
        &self.settings.namespace
    }

    /// Deletes the namespace's topics and drops the databases (close every pool
    /// on them first).
    pub async fn remove(self) {
        crate::kafka::delete_namespace(&self.settings.brokers, &self.settings.namespace)
            .await
            .unwrap();
        for db in self.dbs {
            db.drop_database().await;
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
    scratch: Scratch,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl TestSystem {
    pub async fn start(options: Options) -> TestSystem {
        let scratch = Scratch::create(options.brokers.clone()).await;
        let mut settings = scratch.settings.clone();
        if options.learner_defaults {
            let defaults = Settings::defaults();
            settings.provider = SimulatorConfig {
                addr: settings.provider.addr,
                ..defaults.provider
            };
            settings.payment = defaults.payment;
            settings.db_max_connections = defaults.db_max_connections;
        } else {
            settings.provider.decline_rate = options.decline_rate;
            settings.provider.latency = options.provider_latency;
            settings.payment.attempt_timeout = Duration::from_secs(2);
            settings.payment.deadline = Duration::from_secs(5);
        }

        // Every schema exists from the start, whichever services run (a test may
        // start one later, or run it as a separate process).
        use crate::services::{delivery, inventory, open_database, order, payment};
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
        let provider = crate::system::Provider::build(&settings).await.unwrap();
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
        let orders_db = common::db::connect(&settings.order_database_url, 3)
            .await
            .unwrap();
        let payments_db = common::db::connect(&settings.payment_database_url, 3)
            .await
            .unwrap();
        let inventory_db = common::db::connect(&settings.inventory_database_url, 3)
            .await
            .unwrap();
        let mut system = TestSystem {
            topics: Topics::new(&settings.namespace),
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
            scratch,
            shutdown,
            tasks,
        };
        for &service in options.services {
            system.start_service(service).await;
        }
        system
    }

    /// Starts one more service in this process (e.g. one that was left out at first,
    /// or a second instance).
    pub async fn start_service(&mut self, service: Service) {
        let fail = |err: anyhow::Error| -> ! {
            panic!(
                "starting the {} service failed: {err:#}\nThe phase 2 tests need \
                 PostgreSQL, Redis and Apache Kafka: start them with `cargo xtask up`.",
                service.name()
            )
        };
        let settings = &self.settings;
        let stop = self.shutdown.clone();
        match service {
            Service::Order => {
                let s = OrderService::build(settings)
                    .await
                    .unwrap_or_else(|e| fail(e));
                self.order_url = format!("http://{}", s.addr());
                self.tasks.spawn(s.run(stop));
            }
            Service::Payment => {
                let s = PaymentService::build(settings)
                    .await
                    .unwrap_or_else(|e| fail(e));
                self.tasks.spawn(s.run(stop));
            }
            Service::Inventory => {
                let s = InventoryService::build(settings)
                    .await
                    .unwrap_or_else(|e| fail(e));
                self.tasks.spawn(s.run(stop));
            }
            Service::Notification => {
                let s = NotificationService::build(settings)
                    .await
                    .unwrap_or_else(|e| fail(e));
                self.notification_addr = Some(s.addr());
                self.tasks.spawn(s.run(stop));
            }
            Service::Delivery => {
                let s = DeliveryService::build(settings)
                    .await
                    .unwrap_or_else(|e| fail(e));
                self.tasks.spawn(s.run(stop));
            }
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
        place_order(&self.http, &self.order_url, items).await
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
        self.orders_db.close().await;
        self.payments_db.close().await;
        self.inventory_db.close().await;
        self.scratch.remove().await;
    }
}

/// `POST {order_url}/orders` of `items` (`[(sku, qty)]`) for customer `cust-1`;
/// returns the order's id once accepted (202). Phase 3's harness places its orders
/// with it too.
pub async fn place_order(http: &reqwest::Client, order_url: &str, items: &[(&str, u8)]) -> OrderId {
    let items: Vec<Value> = items
        .iter()
        .map(|(sku, qty)| json!({"sku": sku, "qty": qty}))
        .collect();
    let response = http
        .post(format!("{order_url}/orders"))
        .json(&json!({"customer_id": "cust-1", "items": items}))
        .send()
        .await
        .expect("order API reachable");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 202, "order accepted: {body}");
    body["id"].as_str().unwrap().parse().unwrap()
}
