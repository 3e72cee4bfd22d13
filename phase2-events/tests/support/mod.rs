//! The fixture shared by the phase-2 test binaries: a fresh PostgreSQL database with
//! the shared outbox migrations, and fresh topics on the broker (`cargo xtask up`).
#![allow(dead_code)] // each test binary uses a different part of it

pub mod broker;
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
    let topic = format!("{prefix}-{}", uuid::Uuid::now_v7().simple());
    let mut topics = vec![topic.clone()];
    topics.extend(derived.iter().map(|name| name(&topic)));
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    kafka::ensure_topics(&brokers, &topic_refs, 3).await.unwrap_or_else(|err| {
        panic!("the Kafka-protocol broker at {brokers} is required: {err:#}\nStart it with `cargo xtask up`.")
    });
    let producer = kafka::producer(&brokers).unwrap();
    Setup {
        db,
        pool,
        topic,
        brokers,
        producer,
    }
}

impl Setup {
    /// Closes the pool and removes the database.
    pub async fn close(self) {
        self.pool.close().await;
        self.db.drop_database().await;
    }
}
