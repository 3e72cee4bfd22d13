//! The real infrastructure the phase 2 and phase 3 exercises are checked against:
//! the PostgreSQL server and the Apache Kafka broker that `cargo xtask up` starts.
//!
//! Every check gets a database and topics of its own (fresh names), so checks never
//! see each other's rows or messages and can run in parallel. When a service is not
//! reachable the check fails with a [`Failure`] naming it and `cargo xtask up` —
//! never a silent pass.

use crate::Failure;
use common::testing::{Backend, TestDb};
use phase2_events::{dlq, kafka};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::AnyPool;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

/// Something a check needs running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Postgres,
    Redis,
    Kafka,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Postgres => "PostgreSQL",
            Service::Redis => "Redis",
            Service::Kafka => "Apache Kafka",
        })
    }
}

/// How long one infrastructure check may take before it is reported as stuck.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs an async check on a runtime of its own, with an overall time limit (a
/// learner's code that waits forever is a failure, not a hung tool).
pub fn block_on(check: impl Future<Output = Result<(), Failure>>) -> Result<(), Failure> {
    block_on_within(CHECK_TIMEOUT, check)
}

/// [`block_on`] with a longer limit (a check that runs a whole system).
pub fn block_on_within(
    limit: Duration,
    check: impl Future<Output = Result<(), Failure>>,
) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|err| Failure(format!("cannot start a tokio runtime: {err}")))?;
    runtime.block_on(async {
        match tokio::time::timeout(limit, check).await {
            Ok(result) => result,
            Err(_) => Err(Failure(format!(
                "the check did not finish within {}s: something waits forever (a lock held \
                 across an await, a future that never completes?)",
                limit.as_secs()
            ))),
        }
    })
}

/// A fresh PostgreSQL database with phase 2's shared migrations (`outbox`,
/// `processed_events`) and whatever `migrators` add.
///
/// Dropped without [`Database::close`] — the code under test panicked, or the check
/// timed out — it still removes its database, so a failed check leaves nothing behind.
#[derive(Debug)]
pub struct Database {
    pub pool: AnyPool,
    db: Option<TestDb>,
}

impl Database {
    pub async fn create(migrators: Vec<sqlx::migrate::Migrator>) -> Result<Database, Failure> {
        require(&[Service::Postgres]).await?;
        let db = TestDb::create(Backend::Postgres).await;
        let pool = common::db::connect(&db.url, 10)
            .await
            .map_err(|err| Failure(format!("connecting to the check's database: {err:#}")))?;
        phase2_events::outbox::migrate_shared(&pool)
            .await
            .map_err(|err| Failure(format!("{err:#}")))?;
        for mut migrator in migrators {
            migrator.set_ignore_missing(true);
            migrator
                .run(&pool)
                .await
                .map_err(|err| Failure(format!("migrating the check's database: {err:#}")))?;
        }
        Ok(Database { pool, db: Some(db) })
    }

    /// Closes the pool and drops the database.
    pub async fn close(mut self) {
        self.pool.close().await;
        if let Some(db) = self.db.take() {
            db.drop_database().await;
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let Some(db) = self.db.take() else { return };
        // Not inside the check's runtime (it may be unwinding): a thread of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(db.drop_database());
            }
        })
        .join();
    }
}

/// Topics of a check's own on the broker, under a fresh namespace. Dropped, it
/// deletes them again (after a failed check too), so checks leave nothing behind.
pub struct Kafka {
    pub brokers: String,
    pub namespace: String,
    pub producer: FutureProducer,
}

impl fmt::Debug for Kafka {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kafka")
            .field("brokers", &self.brokers)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Kafka {
    /// Creates `<namespace>.<name>` for each of `names` (3 partitions each).
    pub async fn create(prefix: &str, names: &[&str]) -> Result<Kafka, Failure> {
        let brokers = kafka::brokers();
        let namespace = format!("{prefix}-{}", uuid::Uuid::now_v7().simple());
        let topics: Vec<String> = names.iter().map(|n| format!("{namespace}.{n}")).collect();
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        kafka::ensure_topics(&brokers, &refs, 3)
            .await
            .map_err(|err| unreachable(Service::Kafka, &brokers, &err))?;
        // Topics of checks that were killed before they could delete theirs.
        let _ = kafka::sweep_test_topics(&brokers, Duration::from_secs(3600)).await;
        let producer = kafka::producer(&brokers).map_err(|err| Failure(format!("{err:#}")))?;
        Ok(Kafka {
            brokers,
            namespace,
            producer,
        })
    }

    /// The full name of one of this check's topics (or consumer groups).
    pub fn name(&self, name: &str) -> String {
        format!("{}.{name}", self.namespace)
    }

    /// Publishes one message and waits for the broker's acknowledgement.
    pub async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<(), Failure> {
        publish(&self.producer, topic, Some(key), payload, headers)
            .await
            .map_err(|err| Failure(format!("{err:#}")))
    }

    /// Every message on `topic` right now, oldest first per partition (phase 2's
    /// dead-letter reader, which reads any topic without committing anything).
    pub async fn read_all(&self, topic: &str) -> Result<Vec<dlq::DeadLetter>, Failure> {
        let (brokers, topic) = (self.brokers.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || dlq::list(&brokers, &topic))
            .await
            .map_err(|err| Failure(format!("reading a topic: {err}")))?
            .map_err(|err| Failure(format!("reading a topic: {err:#}")))
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let (brokers, namespace) = (self.brokers.clone(), self.namespace.clone());
        // Not inside the check's runtime (it may be unwinding): a thread of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = runtime.block_on(kafka::delete_namespace(&brokers, &namespace));
            }
        })
        .join();
    }
}

/// Publishes one message (key, payload and headers all optional but the topic) and
/// waits for the broker's acknowledgement. The checkers' own producers use it too.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    payload: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> anyhow::Result<()> {
    let mut owned = rdkafka::message::OwnedHeaders::new();
    for (name, value) in headers {
        owned = owned.insert(rdkafka::message::Header {
            key: name,
            value: Some(*value),
        });
    }
    let mut record = FutureRecord::<str, [u8]>::to(topic).headers(owned);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(err, _)| anyhow::anyhow!("publishing to {topic}: {err}"))
}

/// Fails, naming the first of `services` that does not answer.
pub async fn require(services: &[Service]) -> Result<(), Failure> {
    for service in services {
        match service {
            Service::Postgres => {
                let admin = common::testing::postgres_admin_url();
                match common::db::connect(&admin, 1).await {
                    Ok(pool) => pool.close().await,
                    Err(err) => {
                        return Err(unreachable(*service, &common::db::redact(&admin), &err));
                    }
                }
            }
            Service::Redis => {
                let url = common::endpoints::REDIS.url();
                let addr = url
                    .trim_start_matches("redis://")
                    .rsplit('@')
                    .next()
                    .unwrap_or_default()
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                if let Err(err) = tokio::net::TcpStream::connect(&addr).await {
                    return Err(unreachable(*service, &addr, &err));
                }
            }
            Service::Kafka => {
                let brokers = kafka::brokers();
                let at = brokers.clone();
                let reached = tokio::task::spawn_blocking(move || {
                    use rdkafka::consumer::{BaseConsumer, Consumer};
                    let client: BaseConsumer = rdkafka::ClientConfig::new()
                        .set("bootstrap.servers", &at)
                        .create()
                        .map_err(|e| e.to_string())?;
                    client
                        .fetch_metadata(None, Duration::from_secs(5))
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
                .await
                .map_err(|err| Failure(format!("{err}")))?;
                if let Err(err) = reached {
                    return Err(unreachable(*service, &brokers, &err));
                }
            }
        }
    }
    Ok(())
}

fn unreachable(service: Service, at: &str, err: &dyn fmt::Display) -> Failure {
    Failure(format!(
        "{service} is needed for this check and is not reachable at {at} ({err}).\n    \
         Start it with `cargo xtask up`, then check again."
    ))
}

/// Polls `probe` until it returns `Some`, or fails with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if start.elapsed() > timeout {
            return Err(Failure(format!(
                "waited {}s and still not: {what}",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
