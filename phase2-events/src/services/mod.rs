//! The services. Each has a `build` (connect, migrate, create topics, bind — all that
//! can fail, before anything runs) and a `run` (until the shutdown token is
//! cancelled). `cargo run -p phase2-events -- all` builds them all in one process;
//! each subcommand builds one, so several instances can run side by side.

pub mod delivery;
pub mod inventory;
pub mod notification;
pub mod order;
pub mod payment;

use crate::config::Settings;
use crate::consumer::{Effect, EventConsumer, HandleError, Handler, Transactional};
use crate::events::Envelope;
use crate::flow::{Service, Topics};
use crate::{kafka, outbox};
use anyhow::Context;
use common::shutdown::CancellationToken;
use rdkafka::producer::FutureProducer;
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Transaction};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Creates the service's database if needed, connects, and applies the shared outbox
/// migrations plus the service's own.
pub async fn open_database(
    url: &str,
    max_connections: u32,
    own: Vec<Migrator>,
) -> anyhow::Result<AnyPool> {
    common::db::ensure_database(url).await?;
    let pool = common::db::connect(url, max_connections).await?;
    outbox::migrate_shared(&pool).await?;
    for mut migrator in own {
        // Several migration sets share this database; each ignores the others' rows.
        migrator.set_ignore_missing(true);
        migrator
            .run(&pool)
            .await
            .with_context(|| format!("migrating {}", common::db::redact(url)))?;
    }
    Ok(pool)
}

/// What every event-driven service needs from Kafka: its topics exist and a producer.
pub async fn connect_kafka(settings: &Settings) -> anyhow::Result<(Topics, FutureProducer)> {
    let topics = Topics::new(&settings.namespace);
    let all = topics.all();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    kafka::ensure_topics(&settings.brokers, &refs, settings.partitions).await?;
    Ok((topics, kafka::producer(&settings.brokers)?))
}

/// The consumer of `service`: its group, reading what [`Topics::reads`] says it
/// reads.
pub fn consumer<E: Effect>(
    settings: &Settings,
    topics: &Topics,
    service: Service,
    producer: FutureProducer,
    effect: E,
) -> EventConsumer<E> {
    EventConsumer {
        name: topics.group(service),
        brokers: settings.brokers.clone(),
        instance: settings.consumer_instance.clone(),
        when_unreachable: settings.when_database_unreachable,
        topics: topics.reads(service),
        producer,
        effect,
    }
}

/// Runs `task` again (after a pause) whenever it fails, until `shutdown`. A consumer
/// or relay that lost its database or broker is restarted rather than left dead; what
/// it had not committed is redelivered, and de-duplicated.
pub async fn supervise<F, Fut>(what: String, shutdown: CancellationToken, mut task: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    loop {
        match task().await {
            Ok(()) if shutdown.is_cancelled() => return,
            Ok(()) => tracing::warn!(task = %what, "stopped by itself; restarting"),
            Err(err) => {
                tracing::error!(task = %what, error = format!("{err:#}"), "failed; restarting in 1 s")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Runs a consumer under [`supervise`].
pub async fn supervise_consumer<E: Effect + Clone>(
    consumer: EventConsumer<E>,
    shutdown: CancellationToken,
) {
    let what = format!("consumer {}", consumer.name);
    let stop = shutdown.clone();
    supervise(what, shutdown, move || consumer.clone().run(stop.clone())).await
}

/// A service that is one transactional consumer over a database of its own
/// (payment, inventory): built and ready to run.
#[derive(Debug)]
pub struct ConsumerService<H> {
    pool: AnyPool,
    topics: Arc<Topics>,
    consumer: EventConsumer<Transactional<H>>,
}

impl<H: Handler + Clone> ConsumerService<H> {
    /// Opens (and migrates) `database_url`, connects to Kafka, and builds the
    /// consumer group of `service` (reading what [`Topics::reads`] says) with the
    /// handler that `handler(topics)` makes.
    pub async fn open(
        settings: &Settings,
        service: Service,
        database_url: &str,
        migrators: Vec<Migrator>,
        handler: impl FnOnce(Arc<Topics>) -> H,
    ) -> anyhow::Result<Self> {
        let pool = open_database(database_url, settings.db_max_connections, migrators).await?;
        let (topics, producer) = connect_kafka(settings).await?;
        let topics = Arc::new(topics);
        let consumer = consumer(
            settings,
            &topics,
            service,
            producer,
            Transactional {
                pool: pool.clone(),
                handler: handler(topics.clone()),
            },
        );
        Ok(ConsumerService {
            pool,
            topics,
            consumer,
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn topics(&self) -> Arc<Topics> {
        self.topics.clone()
    }

    /// Consumes until `shutdown`, restarting the consumer if it fails.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        supervise_consumer(self.consumer, shutdown).await;
        self.pool.close().await;
        Ok(())
    }
}

/// A payload as JSON, for a handler.
pub fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, HandleError> {
    serde_json::to_value(value).map_err(|e| HandleError::Permanent(e.to_string()))
}

/// [`outbox::enqueue`] for a handler: a failure is transient.
pub async fn enqueue(
    tx: &mut Transaction<'static, Any>,
    topic: &str,
    event: &Envelope,
) -> Result<(), HandleError> {
    outbox::enqueue(tx, topic, event)
        .await
        .map_err(HandleError::Transient)
}
