//! The fixture shared by the phase-2 test binaries: a fresh PostgreSQL database with
//! the shared outbox migrations, and fresh topics on the broker (`cargo xtask up`),
//! deleted again at the end.
#![allow(dead_code)] // each test binary uses a different part of it

pub mod checker;
pub mod system;

use common::testing::{Backend, TestDb};
use phase2_events::{kafka, outbox};
use rdkafka::producer::FutureProducer;
use sqlx::AnyPool;

pub struct Setup {
    pub db: TestDb,
    pub pool: AnyPool,
    /// A topic of this test's own (3 partitions).
    pub topic: String,
    /// It and the topics derived from it, deleted by [`Setup::close`].
    pub topics: Vec<String>,
    pub brokers: String,
    pub producer: FutureProducer,
}

/// Creates the database and `<prefix>-<uuid>` plus the topics `derived` names from it
/// (e.g. its retry and dead-letter topics). Fails, naming the broker and
/// `cargo xtask up`, when the broker is unreachable.
pub async fn setup(prefix: &str, derived: &[fn(&str) -> String]) -> Setup {
    let db = TestDb::create(Backend::Postgres).await;
    let pool = common::db::connect(&db.url, 5).await.unwrap();
    outbox::migrate_shared(&pool).await.unwrap();
    let brokers = kafka::brokers();
    sweep_once(&brokers).await;
    let topic = format!("{prefix}-{}", uuid::Uuid::now_v7().simple());
    let mut topics = vec![topic.clone()];
    topics.extend(derived.iter().map(|name| name(&topic)));
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    kafka::ensure_topics(&brokers, &topic_refs, 3)
        .await
        .unwrap_or_else(|err| {
            panic!(
                "Apache Kafka at {brokers} is required: {err:#}\nStart it with `cargo xtask up`."
            )
        });
    let producer = kafka::producer(&brokers).unwrap();
    Setup {
        db,
        pool,
        topic,
        topics,
        brokers,
        producer,
    }
}

/// Once per test binary: deletes the topics that earlier runs' tests left behind
/// (a test that panicked never reached its clean-up), so the broker's storage does
/// not grow from run to run. Only topics more than an hour old: another test
/// binary running now may be using younger ones.
pub async fn sweep_once(brokers: &str) {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            match kafka::sweep_test_topics(brokers, std::time::Duration::from_secs(3600)).await {
                Ok(0) => {}
                Ok(n) => eprintln!("deleted {n} topics that earlier test runs left behind"),
                Err(err) => eprintln!("warning: sweeping old test topics: {err:#}"),
            }
        })
        .await;
}

impl Setup {
    /// Closes the pool, removes the database and deletes the topics.
    pub async fn close(self) {
        self.pool.close().await;
        self.db.drop_database().await;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        kafka::delete_topics(&self.brokers, &topics).await.unwrap();
    }
}
