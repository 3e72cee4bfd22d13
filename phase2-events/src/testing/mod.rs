//! The test harness of phases 2–4 (feature `testing`; never in a normal build).
//!
//! | item | what it gives a test |
//! |---|---|
//! | [`Scratch`] | four fresh PostgreSQL databases, a topic namespace of its own and the [`Settings`] that point at them; removed again by [`Scratch::remove`] |
//! | [`TestSystem`] | a whole phase 2 system on a [`Scratch`]: the provider simulator, the relays and the chosen [`Service`]s, all in the test's process |
//! | [`checker`] | the no-loss checker: what clients were told against the databases, the provider's ledger, Redis and the outboxes |
//! | [`tour`] | a README's checked tour on a [`Scratch`] of its own |
//! | [`page`] | the page to watch, ordered from in a headless browser until `delivered` |
//! | [`Setup`] | a smaller fixture: one database with the outbox migrations and a topic of the test's own |
//!
//! Phase 3's harness builds an observed system on the same [`Scratch`]; phase 4
//! checks its chaos runs with the same [`checker`]. Everything needs PostgreSQL, Redis
//! and Apache Kafka (`cargo xtask up`): when one is missing, the test fails saying so.
//!
//! [`Settings`]: crate::config::Settings
//! [`Service`]: crate::flow::Service

pub mod checker;
pub mod page;
mod system;
pub mod tour;

pub use system::{Options, Scratch, TestSystem, place_order};

use crate::{kafka, outbox};
use common::testing::{Backend, TestDb};
use rdkafka::producer::FutureProducer;
use sqlx::AnyPool;

/// One database and one topic (with its derived topics) for a test of one mechanism.
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

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("db", &self.db)
            .field("topics", &self.topics)
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
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
