//! Test harness shared by the phase-1 test binaries.
//!
//! `spawn_app(backend)` builds the real application on port 0 with its own fresh
//! database (a temporary SQLite file, or a new PostgreSQL database on the server named
//! by `TEST_DATABASE_URL`), and an in-process payment provider simulator. Tests talk
//! to it over real HTTP and check outcomes against the database and the provider's
//! ledger.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod books;
pub mod process;

use common::payment::{Ledger, PaymentClientConfig, SimulatorConfig};
use common::shutdown::CancellationToken;
use phase1_monolith::config::Settings;
use phase1_monolith::startup::Application;
use serde_json::{Value, json};
use sqlx::{AnyPool, Row};
use std::time::Duration;

pub use common::testing::{Backend, TestDb};

/// Generates `sqlite::NAME` and `postgres::NAME` tests from `async fn NAME(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::support::Backend::Sqlite).await }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::support::Backend::Postgres).await }
            )*
        }
    };
}

/// Fast, deterministic defaults: a provider that always succeeds instantly, short
/// timeouts, a reconciler that looks often.
pub fn test_settings(database_url: &str) -> Settings {
    Settings {
        addr: "127.0.0.1:0".parse().unwrap(),
        database_url: database_url.to_owned(),
        db_max_connections: 5,
        payment_url: None,
        provider: SimulatorConfig::instant(),
        payment: PaymentClientConfig {
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(5),
            max_retries: 3,
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(50),
            breaker_cooldown: Duration::from_secs(1),
            ..PaymentClientConfig::default()
        },
        reconcile_interval: Duration::from_millis(100),
        reconcile_after: Duration::from_secs(6),
        request_timeout: Duration::from_secs(10),
        body_limit: 64 * 1024,
    }
}

#[derive(Debug)]
pub struct TestApp {
    pub address: String,
    pub provider_url: String,
    pub http: reqwest::Client,
    /// A separate pool for the test's own assertions on the database.
    pub db: AnyPool,
    test_db: TestDb,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let test_db = TestDb::create(backend).await;
    let mut settings = test_settings(&test_db.url);
    configure(&mut settings);
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let address = format!("http://{}", app.addr());
    let provider_url = app.payment_url().to_owned();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let db = common::db::connect(&test_db.url, 2)
        .await
        .expect("test pool");
    TestApp {
        address,
        provider_url,
        http: reqwest::Client::new(),
        db,
        test_db,
        shutdown,
        server,
    }
}

pub fn order_body(customer: &str, items: &[(&str, i64)]) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(sku, qty)| json!({"sku": sku, "qty": qty}))
        .collect();
    json!({"customer_id": customer, "items": items})
}

impl TestApp {
    pub async fn post_order(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/orders", self.address))
            .json(body)
            .send()
            .await
            .expect("POST /orders")
    }

    pub async fn post_order_with_key(&self, body: &Value, key: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/orders", self.address))
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .expect("POST /orders")
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.address))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("GET")
    }

    pub async fn ready(&self) -> Value {
        self.get("/ready").await.json().await.unwrap()
    }

    pub async fn ledger(&self) -> Ledger {
        fetch_ledger(&self.http, &self.provider_url).await
    }

    /// Changes the provider's behaviour at runtime (`PUT /control`).
    pub async fn provider_control(&self, patch: Value) {
        let response = self
            .http
            .put(format!("{}/control", self.provider_url))
            .json(&patch)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "PUT /control: {}",
            response.status()
        );
    }

    pub async fn order_count(&self) -> i64 {
        count(&self.db, "SELECT COUNT(*) AS n FROM orders").await
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        count(&self.db, sql).await
    }

    pub async fn stored_orders(&self) -> Vec<books::StoredOrder> {
        books::stored_orders(&self.db).await
    }

    /// Waits (bounded) until no order is `placed` any more.
    pub async fn wait_until_settled(&self, limit: Duration) {
        books::wait_until_settled(&self.db, limit).await
    }

    /// Stops the app like SIGTERM would, then removes its database.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server
            .await
            .expect("server task")
            .expect("server stopped cleanly");
        self.db.close().await;
        self.test_db.drop_database().await;
    }
}

pub async fn fetch_ledger(http: &reqwest::Client, provider_url: &str) -> Ledger {
    http.get(format!("{provider_url}/ledger"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn count(db: &AnyPool, sql: &'static str) -> i64 {
    sqlx::query(sql)
        .fetch_one(db)
        .await
        .unwrap()
        .get::<i64, _>("n")
}
