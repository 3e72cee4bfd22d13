//! An at-least-once, idempotent Kafka consumer with retry and dead-letter topics.
//!
//! Messages of different orders are handled concurrently: a payment that waits
//! seconds for the provider must not hold up every other order on the consumer's
//! partitions. Messages of the *same* order (the message key) are handled one after
//! another, in the order they arrived, as Kafka delivered them. A handler that only
//! touches its database applies **batches**: whatever is waiting (up to
//! [`MAX_BATCH`]) in one transaction, so that one commit — one wait for the disk —
//! serves many events; a batch that fails is applied again one message at a time, so
//! one bad message never fails the others. An idle consumer never waits to fill a
//! batch: the first message goes alone, and the next batch is what arrived meanwhile.
//! For each message:
//!
//! 1. Read the envelope. Unreadable → **dead-letter topic** (`<topic>.dlq`), reason in
//!    the headers. A poison message must not block the partition forever.
//! 2. In one database transaction, holding a lock on the order (one event of an order
//!    at a time, even when its events come from two topics): record `(consumer, event_id)` in
//!    `processed_events` (`ON CONFLICT DO NOTHING`) **and** apply the handler's
//!    effect. Already recorded → a redelivery: skip it. This is what makes
//!    at-least-once delivery *effectively once*.
//! 3. Handler failed transiently (a database hiccup, a provider timeout) → publish a
//!    copy to the **retry topic** (`<topic>.retry`) with `retry_attempt` and
//!    `retry_not_before` headers; the retry consumer (a group of its own, so waiting
//!    never holds up the main topic) waits until then and tries again. After
//!    [`MAX_RETRIES`] it goes to the dead-letter topic. Failed permanently →
//!    dead-letter topic at once.
//! 4. Only then **store the offset** (`enable.auto.offset.store=false`): the offset is
//!    committed (automatically, and by librdkafka on revoke and on close) only for
//!    messages whose effect is committed or that were handed to a retry/DLQ topic.
//!    Committing before processing is how data is lost quietly. With messages
//!    finishing out of order, the offset stored is the one below the lowest message
//!    still unfinished in its partition: a crash redelivers everything not done (and
//!    some that was: those are skipped as duplicates).
//!
//! Dead letters carry: `dlq_reason`, `dlq_source_topic`, `dlq_source_partition`,
//! `dlq_source_offset`, `dlq_consumer`, plus the original headers.
//!
//! Each message is handled inside a `consume` span whose fields record what became
//! of it (`outcome`: applied, duplicate, retried, dead_lettered; `failure`;
//! `dlq_reason` as a short class) and which continues the trace in the message's
//! `traceparent` header. Phase 3 turns these spans into metrics and traces; here they
//! only give every log line of a message its context.

use crate::config::WhenUnreachable;
use crate::events::{DecodeError, Envelope};
use anyhow::Context;
use common::shutdown::CancellationToken;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::Message;
use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::{Any, AnyPool, Transaction};
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::Duration;
use tracing::Instrument;

/// Attempts through the retry topic before a message is dead-lettered.
pub const MAX_RETRIES: u32 = 3;

/// Messages one consumer handles at the same time (each of a different order). A
/// payment waits seconds for the provider: handled one at a time, one slow order
/// held up every order behind it on all the consumer's partitions. Each handler holds
/// a database connection while it runs, so more than the pool has only queues for it.
pub const MAX_IN_FLIGHT: usize = 16;

/// Messages received but not finished (running, or waiting behind an earlier message
/// of the same order) before the consumer stops fetching: the bound on what one
/// consumer holds in memory, and backpressure towards the broker.
pub const MAX_HELD: usize = 256;

/// The most events one transaction applies ([`Handler::BATCH`]). A commit waits for
/// the disk once, whatever it holds; past a few hundred events a batch only makes the
/// transaction, and the work redone when it fails, longer.
pub const MAX_BATCH: usize = 128;

/// `fetch.wait.max.ms` of the main consumers: how long the broker may hold a fetch
/// that finds nothing new. Kafka answers a held fetch as soon as a message is
/// appended, so this is not latency: it only says how often an idle consumer asks
/// again. librdkafka's default.
const MAIN_FETCH_WAIT: Duration = Duration::from_millis(500);
/// `fetch.wait.max.ms` of the retry consumers: the retry topics are empty most of the
/// time, so they ask half as often.
const RETRY_FETCH_WAIT: Duration = Duration::from_millis(1000);
/// `session.timeout.ms`: how long the group coordinator waits without a heartbeat
/// before it declares a member dead and hands its partitions to the others. A
/// SIGKILLed consumer sends no goodbye, so this is how long its partitions stand
/// still: librdkafka's default is 45 s; 6 s is the broker's smallest
/// (`group.min.session.timeout.ms`) and moves them within about 10 s, rebalance
/// included. Heartbeats come from librdkafka's own thread, so a slow handler does not
/// miss them (a handler stuck for `max.poll.interval.ms`, 5 minutes, would).
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// `heartbeat.interval.ms`: a third of the session timeout, Kafka's rule of thumb,
/// so two lost heartbeats in a row are not yet a death.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// Why a handler could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// May succeed later: retry through the retry topic.
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
    /// Will never succeed (invalid content, impossible state): dead-letter it.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl HandleError {
    /// A failure that may pass (a provider that timed out, say): retry later.
    pub fn transient(err: impl Into<anyhow::Error>) -> HandleError {
        HandleError::Transient(err.into())
    }
}

/// A database error inside a handler is a hiccup (a lost connection, a deadlock, a
/// serialization failure): the transaction is rolled back and the event retried, so
/// handlers write `?` after each query.
impl From<sqlx::Error> for HandleError {
    fn from(err: sqlx::Error) -> HandleError {
        HandleError::Transient(err.into())
    }
}

/// A payload that cannot be read now never will be: dead-letter it.
impl From<DecodeError> for HandleError {
    fn from(err: DecodeError) -> HandleError {
        HandleError::Permanent(err.to_string())
    }
}

/// What a service does with one event, inside the consumer's transaction.
pub trait Handler: Send + Sync + 'static {
    /// How many events one transaction may apply (see [`Effect::BATCH`]). Batching
    /// is the default; a handler that waits on something slow inside the transaction
    /// takes one event at a time instead, so that slow events run side by side.
    const BATCH: usize = MAX_BATCH;

    /// Whether this handler does anything with events of `event_type`. Events it
    /// ignores cost no transaction and leave no `processed_events` row: a consumer of
    /// `orders` sees every status change of every order, and most are not its
    /// business.
    fn wants(&self, _event_type: &str) -> bool {
        true
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut Transaction<'static, Any>,
        event: &'a Envelope,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + 'a;
}

/// How a consumer applies one event and remembers that it did. [`Transactional`] is
/// the rule (effect + `processed_events` row in one database transaction); the
/// notification service, whose effect is not in a database, de-duplicates in Redis.
pub trait Effect: Send + Sync + 'static {
    /// How many events [`Effect::apply_batch`] takes at once. 1 (the default): every
    /// event is applied on its own, up to [`MAX_IN_FLIGHT`] of them at the same time.
    /// More: the consumer runs one batch at a time, of every event that is ready (at
    /// most this many), and a batch that fails is applied again one event at a time.
    const BATCH: usize = 1;

    fn apply<'a>(
        &'a self,
        consumer: &'a str,
        event: &'a Envelope,
    ) -> impl Future<Output = anyhow::Result<Verdict>> + Send + 'a;

    /// Whether the effect's store answers (the consumer probes it while its
    /// partitions are paused, see [`database_unreachable`]). Default: always.
    fn ready(&self) -> impl Future<Output = anyhow::Result<()>> + Send + '_ {
        async { Ok(()) }
    }

    /// Applies several events of different orders: `Ok` with one verdict per event,
    /// each acted on as if it came from [`Effect::apply`]; `Err` when nothing was kept
    /// — a [`FailedInBatch`] when one event was the cause, which the consumer then
    /// handles alone with [`Effect::apply`] before applying the rest again. Each
    /// event's log lines belong in its `span`. The default applies them one after the
    /// other, each on its own; [`Transactional`] applies them all in one transaction.
    fn apply_batch<'a>(
        &'a self,
        consumer: &'a str,
        batch: &'a [Batched],
    ) -> impl Future<Output = anyhow::Result<Vec<Verdict>>> + Send + 'a {
        async move {
            let mut verdicts = Vec::with_capacity(batch.len());
            for item in batch {
                verdicts.push(
                    self.apply(consumer, &item.event)
                        .instrument(item.span.clone())
                        .await?,
                );
            }
            Ok(verdicts)
        }
    }
}

/// One event of a batch, with the `consume` span its work is logged in.
#[derive(Debug)]
pub struct Batched {
    pub event: Envelope,
    pub span: tracing::Span,
}

/// The error of a batch that one of its events failed: which one (its index in the
/// batch), so that the consumer can handle that event alone and apply the rest again
/// as a batch.
#[derive(Debug, thiserror::Error)]
#[error("event {index} of the batch ({event_type}) failed: {reason}")]
pub struct FailedInBatch {
    pub index: usize,
    pub event_type: String,
    pub reason: String,
}

/// The outcome of applying one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Applied,
    /// Seen before (a redelivery): skipped.
    Duplicate,
    /// Not this consumer's business ([`Handler::wants`]): nothing to apply or record.
    Ignored,
    /// Failed transiently: try again later, through the retry topic.
    Retry(String),
    /// Will never succeed: to the dead-letter topic, with this reason.
    DeadLetter(String),
}

/// A [`Handler`] run inside a transaction that also records the event as processed.
#[derive(Debug, Clone)]
pub struct Transactional<H> {
    pub pool: AnyPool,
    pub handler: H,
}

impl<H: Handler> Effect for Transactional<H> {
    const BATCH: usize = H::BATCH;

    async fn ready(&self) -> anyhow::Result<()> {
        tokio::time::timeout(PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(&self.pool))
            .await
            .context("the database did not answer in time")??;
        Ok(())
    }

    async fn apply(&self, consumer: &str, event: &Envelope) -> anyhow::Result<Verdict> {
        if !self.handler.wants(&event.event_type) {
            return Ok(Verdict::Ignored);
        }
        let mut tx = self.pool.begin().await.context("consumer: begin")?;
        if lock_and_claim(&mut tx, consumer, &[event])
            .await?
            .is_empty()
        {
            tx.rollback().await?;
            return Ok(Verdict::Duplicate);
        }
        match self.handler.handle(&mut tx, event).await {
            Ok(()) => {
                tx.commit().await.context("consumer: commit")?;
                Ok(Verdict::Applied)
            }
            // The database itself went away: not this event's fault, and the retry
            // topic would only fill up with every event behind it. The consumer pauses.
            Err(HandleError::Transient(err)) if database_unreachable(&err) => Err(err),
            Err(HandleError::Transient(err)) => {
                tx.rollback().await?;
                Ok(Verdict::Retry(format!("{err:#}")))
            }
            Err(HandleError::Permanent(reason)) => {
                tx.rollback().await?;
                Ok(Verdict::DeadLetter(reason))
            }
        }
    }

    /// The same rule for a batch, in **one** transaction: every event's order is
    /// locked, every event claimed in `processed_events`, every effect applied and
    /// every outbox row written, then one commit. A commit waits for the disk (the
    /// write-ahead log's fsync): per event, that wait was most of what an event cost.
    /// A handler that fails rolls back the whole batch ([`FailedInBatch`] says which
    /// event); the consumer handles that event alone and applies the rest again, so
    /// one bad event never fails the others.
    async fn apply_batch(&self, consumer: &str, batch: &[Batched]) -> anyhow::Result<Vec<Verdict>> {
        let mut verdicts = vec![Verdict::Ignored; batch.len()];
        let wanted: Vec<usize> = (0..batch.len())
            .filter(|&i| self.handler.wants(&batch[i].event.event_type))
            .collect();
        if wanted.is_empty() {
            return Ok(verdicts);
        }
        let mut tx = self.pool.begin().await.context("consumer: begin")?;
        let events: Vec<&Envelope> = wanted.iter().map(|&i| &batch[i].event).collect();
        let claimed = lock_and_claim(&mut tx, consumer, &events).await?;
        for &i in &wanted {
            let item = &batch[i];
            if !claimed.contains(&item.event.event_id.to_string()) {
                verdicts[i] = Verdict::Duplicate;
                continue;
            }
            if let Err(err) = self
                .handler
                .handle(&mut tx, &item.event)
                .instrument(item.span.clone())
                .await
            {
                tx.rollback().await?;
                return Err(FailedInBatch {
                    index: i,
                    event_type: item.event.event_type.clone(),
                    reason: err.to_string(),
                }
                .into());
            }
            verdicts[i] = Verdict::Applied;
        }
        tx.commit().await.context("consumer: commit")?;
        Ok(verdicts)
    }
}

/// Inside `tx`: locks the orders of `events` and claims the events in
/// `processed_events`; returns the ids claimed now (the others were seen before).
///
/// One event of an order at a time, per consumer. Kafka keeps an order's events in
/// sequence only within a partition; the retry consumer and, during a rebalance, a
/// second instance may hold another event of the same order at the same moment (say,
/// a retried `OrderPlaced` while `OrderCancelled` arrives). The advisory lock, held
/// until commit, makes the second wait for the first instead of deciding on a state
/// that is about to change. The locks are taken in one statement and in one order —
/// sorted — so that two transactions never each hold a lock the other waits for; the
/// claims are one `INSERT … RETURNING`.
async fn lock_and_claim(
    tx: &mut Transaction<'static, Any>,
    consumer: &str,
    events: &[&Envelope],
) -> anyhow::Result<HashSet<String>> {
    let mut locks: Vec<String> = events
        .iter()
        .map(|event| format!("{consumer}/{}", event.order_id))
        .collect();
    locks.sort();
    locks.dedup();
    let sql = format!(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM (VALUES {}) AS v(k)",
        common::db::placeholders(locks.len(), 1, 1)
    );
    let mut lock = sqlx::query(sqlx::AssertSqlSafe(sql));
    for key in &locks {
        lock = lock.bind(key);
    }
    lock.execute(&mut **tx)
        .await
        .context("consumer: locking the orders")?;
    let sql = format!(
        "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES {} \
         ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id",
        common::db::placeholders(events.len(), 3, 1)
    );
    let now = common::db::timestamp(common::db::now());
    let mut claim = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
    for event in events {
        claim = claim
            .bind(consumer)
            .bind(event.event_id.to_string())
            .bind(now.clone());
    }
    Ok(claim
        .fetch_all(&mut **tx)
        .await
        .context("consumer: recording the events")?
        .into_iter()
        .collect())
}

/// Names derived from a topic.
/// Logged when a consumer pauses its partitions because its database is unreachable,
/// and when it resumes them.
pub const LOG_PAUSED: &str = "database unreachable: partitions paused, probing it";
pub const LOG_RESUMED: &str = "database answers: partitions resumed";

/// How long the consumer waits for a probe of its database.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// First wait before probing a database that went away; doubled up to the cap.
const PAUSE_FIRST_PROBE: Duration = Duration::from_millis(250);
const PAUSE_PROBE_CAP: Duration = Duration::from_secs(5);

/// Whether `err` says the database cannot be reached at all (connection refused or
/// reset, no connection from the pool in time) rather than that one event failed.
/// Then no event can succeed: the consumer **pauses** its partitions and probes the
/// database until it answers, instead of sending every event to the retry topic
/// (where each would fail again, three times, and end dead-lettered) — the circuit
/// breaker's idea applied to a consumer.
pub fn database_unreachable(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<sqlx::Error>(),
            Some(
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Tls(_)
            )
        )
    })
}

pub fn retry_topic(topic: &str) -> String {
    format!("{topic}.retry")
}
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}
/// The consumer group that reads a group's retry topics.
pub fn retry_group(group: &str) -> String {
    format!("{group}.retry")
}

/// Logs rebalances and commits.
///
/// **Commit on revoke** needs no code here: with `enable.auto.commit=true`,
/// librdkafka itself commits the stored offsets of the partitions being taken away
/// (on a rebalance and on close) and waits for that commit before giving them up
/// (`rd_kafka_assignment_serve_removals` in librdkafka's `rdkafka_assignment.c`). So
/// the next owner starts exactly after what we finished. A synchronous commit of our
/// own in this callback would block the polling thread with no timeout when the group
/// coordinator is unreachable — seen after a network partition, where it hung the
/// consumer's shutdown for good.
#[derive(Debug)]
pub struct RebalanceLog {
    name: String,
}

impl ClientContext for RebalanceLog {}

impl ConsumerContext for RebalanceLog {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => {
                tracing::info!(consumer = %self.name, partitions = ?partitions.to_topic_map(), "partitions revoked; their stored offsets are committed")
            }
            Rebalance::Assign(partitions) => {
                tracing::info!(consumer = %self.name, partitions = ?partitions.to_topic_map(), "partitions assigned")
            }
            Rebalance::Error(err) => {
                tracing::warn!(consumer = %self.name, error = %err, "rebalance error")
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                tracing::debug!(consumer = %self.name, offsets = ?offsets.to_topic_map(), "offsets committed")
            }
            // Nothing was stored since the last commit: normal when idle.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(err) => {
                tracing::warn!(consumer = %self.name, error = %err, "offset commit failed; retried at the next commit")
            }
        }
    }
}

/// One consumer: a group reading `topics` (and their retry topics).
#[derive(Clone)]
pub struct EventConsumer<E> {
    /// Consumer group, and the `consumer` column of `processed_events`.
    pub name: String,
    pub brokers: String,
    /// Static membership's `group.instance.id` (`--consumer-instance`), if any.
    pub instance: Option<String>,
    /// Pause (the default) or retry when the database cannot be reached at all.
    pub when_unreachable: WhenUnreachable,
    pub topics: Vec<String>,
    pub producer: FutureProducer,
    /// Usually [`Transactional`].
    pub effect: E,
}

impl<E> std::fmt::Debug for EventConsumer<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventConsumer")
            .field("name", &self.name)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl<E: Effect> EventConsumer<E> {
    /// A Kafka consumer in `group` reading `topics`.
    fn kafka_consumer(
        &self,
        group: &str,
        topics: &[String],
        fetch_wait: Duration,
    ) -> anyhow::Result<StreamConsumer<RebalanceLog>> {
        let mut config = crate::kafka::client_config(&self.brokers);
        if let Some(instance) = &self.instance {
            // Static membership (KIP-345): a restarted process rejoins as itself.
            config.set("group.instance.id", instance);
        }
        let consumer: StreamConsumer<RebalanceLog> = config
            .set("group.id", group)
            .set("fetch.wait.max.ms", fetch_wait.as_millis().to_string())
            .set(
                "session.timeout.ms",
                SESSION_TIMEOUT.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                HEARTBEAT_INTERVAL.as_millis().to_string(),
            )
            // Cooperative (incremental) rebalancing: when a member joins or dies, only
            // the partitions that change hands are revoked; the others keep being
            // consumed through the rebalance. With the eager strategies (librdkafka's
            // default, range/round-robin) every member stops everything, commits, and
            // waits for the new assignment — under load that is a stall of the whole
            // group for each join or death. What moves is still committed first
            // (see [`RebalanceLog`]), so the lesson is the same: a rebalance changes
            // who processes what, and the offsets decide where the next one starts.
            .set("partition.assignment.strategy", "cooperative-sticky")
            // A new group starts from the beginning: "latest" would silently skip
            // every event published before the group first connected.
            .set("auto.offset.reset", "earliest")
            // Commit automatically — but only offsets we stored after finishing.
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .create_with_context(RebalanceLog {
                name: group.to_owned(),
            })
            .with_context(|| format!("creating consumer {group}"))?;
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&refs)?;
        Ok(consumer)
    }

    /// Consumes until `shutdown`; commits what was finished before returning.
    ///
    /// Two Kafka consumers run side by side: the group `name` reads the main topics,
    /// the group `<name>.retry` reads their retry topics. A message waiting for its
    /// `retry_not_before` time therefore holds up only the retries queued behind it,
    /// never the main partitions. Both record their effects as `name`, so an event
    /// applied through one is a duplicate for the other.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let main = self.kafka_consumer(&self.name, &self.topics, MAIN_FETCH_WAIT)?;
        let retry_topics: Vec<String> = self.topics.iter().map(|t| retry_topic(t)).collect();
        let retry =
            self.kafka_consumer(&retry_group(&self.name), &retry_topics, RETRY_FETCH_WAIT)?;
        tracing::info!(consumer = %self.name, topics = ?self.topics, "consuming");
        let consumed = tokio::try_join!(
            self.consume(&main, &shutdown, E::BATCH),
            // Retries wait for their time one by one, each in its own transaction.
            self.consume(&retry, &shutdown, 1)
        );
        // Dropping a consumer closes it: leave the group, commit the stored offsets.
        // That is a blocking loop in librdkafka, waiting for the broker; run on a
        // runtime thread it would stall every task on that thread — including, in
        // the tests, the fault proxy that carries the very answer it waits for.
        tokio::task::spawn_blocking(move || drop((main, retry)))
            .await
            .context("closing the consumers")?;
        tracing::info!(consumer = %self.name, "consumer stopped; final offsets committed");
        consumed.map(|_| ())
    }

    /// One consumer's loop. Messages of *different* orders are handled concurrently;
    /// messages with the same key — the order id — one after another, in the order
    /// they arrived ([`Lanes`]). What runs at once is a *unit*: one message (at most
    /// [`MAX_IN_FLIGHT`] units at a time), or, for an effect that batches and on the
    /// main topics, every ready message up to [`Effect::BATCH`] in one transaction
    /// (one unit at a time: the next batch gathers while this one commits). A
    /// partition's offset is stored only up to the lowest message not finished yet
    /// ([`Progress`]), so a crash redelivers everything unfinished, and the duplicates
    /// are skipped.
    async fn consume(
        &self,
        consumer: &StreamConsumer<RebalanceLog>,
        shutdown: &CancellationToken,
        batch: usize,
    ) -> anyhow::Result<()> {
        let units = if batch > 1 { 1 } else { MAX_IN_FLIGHT };
        let mut lanes = Lanes::default();
        let mut progress = Progress::default();
        let mut running = FuturesUnordered::new();
        // Units that failed because the database is unreachable: kept (not finished,
        // not stored) while the partitions are paused, and run again once it answers.
        let mut parked: Vec<Vec<OwnedMessage>> = Vec::new();
        let mut probe_after = PAUSE_FIRST_PROBE;
        loop {
            // Start what may start: free keys, and a free slot — unless paused.
            while parked.is_empty() && running.len() < units {
                let unit = lanes.take_ready(batch);
                if unit.is_empty() {
                    break;
                }
                running.push(self.handle(unit, shutdown));
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some((unit, handled)) = running.next(), if !running.is_empty() => {
                    match handled {
                        Err(err) if database_unreachable(&err) => {
                            if parked.is_empty() {
                                probe_after = PAUSE_FIRST_PROBE;
                                self.pause(consumer, true, &err);
                            }
                            parked.push(unit);
                        }
                        handled => self.finished(consumer, &mut lanes, &mut progress, &unit, handled)?,
                    }
                }
                // Paused, and nothing running any more: probe the database.
                () = tokio::time::sleep(probe_after), if !parked.is_empty() && running.is_empty() => {
                    match self.effect.ready().await {
                        Ok(()) => {
                            self.pause(consumer, false, &anyhow::anyhow!("answers again"));
                            for unit in parked.drain(..) {
                                running.push(self.handle(unit, shutdown));
                            }
                        }
                        Err(_) => probe_after = (probe_after * 2).min(PAUSE_PROBE_CAP),
                    }
                }
                received = consumer.recv(), if lanes.held() < MAX_HELD => match received {
                    Ok(message) => {
                        let message = message.detach();
                        progress.received(&message);
                        lanes.push(message);
                    }
                    // A fatal error ends this Kafka consumer for good (librdkafka's
                    // rule): one fenced as a static member whose name another client
                    // took — after the group's coordinator moved with a lost broker
                    // node, say. Only a new consumer can go on: return, and
                    // `services::supervise` makes one; whatever was not committed
                    // is redelivered, and de-duplicated.
                    Err(err @ KafkaError::MessageConsumptionFatal(_)) => {
                        anyhow::bail!("{}: {err}; the consumer must be made again", self.name);
                    }
                    Err(err) => {
                        tracing::warn!(consumer = %self.name, error = %err, "receive error; continuing");
                    }
                },
            }
        }
        // Shutting down: what is running finishes (as a single message did before);
        // what waits behind it is neither processed nor stored, so the next owner gets
        // it. Dropping the consumer then commits the stored offsets (see
        // [`RebalanceLog`]); anything not stored is redelivered — and skipped as a
        // duplicate.
        while let Some((unit, handled)) = running.next().await {
            match handled {
                // Not applied, not stored: the next owner gets it.
                Err(err) if database_unreachable(&err) => {}
                handled => self.finished(consumer, &mut lanes, &mut progress, &unit, handled)?,
            }
        }
        Ok(())
    }

    /// Pauses (or resumes) fetching from every partition assigned to `consumer`.
    fn pause(&self, consumer: &StreamConsumer<RebalanceLog>, pause: bool, why: &anyhow::Error) {
        let assigned = match consumer.assignment() {
            Ok(assigned) => assigned,
            Err(err) => {
                tracing::warn!(consumer = %self.name, error = %err, "no assignment to pause or resume");
                return;
            }
        };
        let done = if pause {
            consumer.pause(&assigned)
        } else {
            consumer.resume(&assigned)
        };
        if let Err(err) = done {
            tracing::warn!(consumer = %self.name, error = %err, "pausing or resuming partitions failed");
        }
        if pause {
            tracing::warn!(consumer = %self.name, partitions = assigned.count(), error = %format!("{why:#}"), "{}", LOG_PAUSED);
        } else {
            tracing::info!(consumer = %self.name, partitions = assigned.count(), "{}", LOG_RESUMED);
        }
    }

    /// Handles one unit (one message, or a batch); `Ok(false)` when shutdown came
    /// first (a retry still waiting for its time): not processed.
    async fn handle<'a>(
        &'a self,
        unit: Vec<OwnedMessage>,
        shutdown: &'a CancellationToken,
    ) -> (Vec<OwnedMessage>, anyhow::Result<bool>) {
        if let [message] = unit.as_slice() {
            self.wait_until_due(message, shutdown).await;
            if shutdown.is_cancelled() {
                return (unit, Ok(false)); // not processed, not stored: the next owner gets it
            }
            let span = self.consume_span(message);
            let processed = self.process(message).instrument(span).await;
            return (unit, processed.map(|()| true));
        }
        let processed = self.process_batch(&unit).await;
        (unit, processed.map(|()| true))
    }

    /// One `consume` span per message: its fields say what happened (phase 3 counts
    /// and times them), and it continues the trace the event carries.
    fn consume_span(&self, message: &OwnedMessage) -> tracing::Span {
        let span = tracing::info_span!(
            "consume",
            consumer = %self.name,
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            event_type = tracing::field::Empty,
            order_id = tracing::field::Empty,
            outcome = tracing::field::Empty,
            failure = tracing::field::Empty,
            dlq_reason = tracing::field::Empty,
        );
        common::telemetry::continue_trace(&span, header(message, "traceparent"));
        span
    }

    /// A unit is done: store the offsets its partitions may now commit, and let the
    /// next message of each key start.
    fn finished(
        &self,
        consumer: &StreamConsumer<RebalanceLog>,
        lanes: &mut Lanes,
        progress: &mut Progress,
        unit: &[OwnedMessage],
        handled: anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        if !handled? {
            return Ok(());
        }
        for message in unit {
            lanes.done(message);
            if let Some(offset) = progress.finished(message) {
                // After a rebalance took the partition away, it is not ours to store:
                // the new owner starts from the last commit and skips what we applied.
                if let Err(err) =
                    consumer.store_offset(message.topic(), message.partition(), offset)
                {
                    tracing::debug!(consumer = %self.name, topic = message.topic(), partition = message.partition(), error = %err, "offset not stored (partition revoked?)");
                }
            }
        }
        Ok(())
    }

    /// Retry-topic messages are not handled before their `retry_not_before` time.
    async fn wait_until_due(&self, message: &impl Message, shutdown: &CancellationToken) {
        let Some(not_before) =
            header(message, "retry_not_before").and_then(|v| v.parse::<i64>().ok())
        else {
            return;
        };
        let wait_ms = not_before - chrono::Utc::now().timestamp_millis();
        if wait_ms > 0 {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(Duration::from_millis(wait_ms as u64)) => {}
            }
        }
    }

    /// Handles one message to completion, inside its `consume` span: applied,
    /// skipped, ignored, retried or dead-lettered.
    async fn process(&self, message: &OwnedMessage) -> anyhow::Result<()> {
        match decode(message) {
            Ok(event) => {
                describe(&tracing::Span::current(), &event);
                self.process_event(message, &event).await
            }
            Err((verdict, class)) => self.settle(message, verdict, class).await,
        }
    }

    /// [`EventConsumer::process`] for a message already read.
    async fn process_event(&self, message: &OwnedMessage, event: &Envelope) -> anyhow::Result<()> {
        let verdict = match self.effect.apply(&self.name, event).await {
            // The defence switched off: an unreachable database is one more transient
            // failure, and every event goes round the retry topic while it lasts.
            Err(err)
                if self.when_unreachable == WhenUnreachable::Retry
                    && database_unreachable(&err) =>
            {
                Verdict::Retry(format!("{err:#}"))
            }
            applied => applied?,
        };
        self.settle(message, verdict, "permanent").await
    }

    /// Handles a batch of messages of different orders. Unreadable ones are
    /// dead-lettered on their own; the others go to [`Effect::apply_batch`] together.
    /// When one event fails the batch ([`FailedInBatch`]), that event is handled on
    /// its own (retried or dead-lettered) and the rest is applied again as a batch;
    /// when the batch fails as a whole (the database is gone), each message is
    /// handled on its own.
    async fn process_batch(&self, unit: &[OwnedMessage]) -> anyhow::Result<()> {
        let mut sources = Vec::with_capacity(unit.len());
        let mut events = Vec::with_capacity(unit.len());
        for message in unit {
            match decode(message) {
                Ok(event) => {
                    sources.push(message);
                    events.push(event);
                }
                Err((verdict, class)) => {
                    self.settle(message, verdict, class)
                        .instrument(self.consume_span(message))
                        .await?
                }
            }
        }
        while sources.len() > 1 {
            // Fresh spans for every attempt: a rolled-back attempt's spans close with no
            // outcome, so phase 3 counts nothing of it.
            let batch: Vec<Batched> = sources
                .iter()
                .zip(events.drain(..))
                .map(|(message, event)| {
                    let span = self.consume_span(message);
                    describe(&span, &event);
                    Batched { event, span }
                })
                .collect();
            let err = match self.effect.apply_batch(&self.name, &batch).await {
                Ok(verdicts) => {
                    for ((message, item), verdict) in sources.iter().zip(batch).zip(verdicts) {
                        self.settle(message, verdict, "permanent")
                            .instrument(item.span)
                            .await?;
                    }
                    return Ok(());
                }
                Err(err) => err,
            };
            events = batch.into_iter().map(|item| item.event).collect();
            let Some(&FailedInBatch { index, .. }) = err.downcast_ref::<FailedInBatch>() else {
                tracing::warn!(consumer = %self.name, messages = sources.len(), error = format!("{err:#}"), "batch failed; handling its messages one by one");
                break;
            };
            tracing::info!(consumer = %self.name, messages = sources.len(), error = format!("{err:#}"), "an event failed its batch; handling it alone, the rest again as a batch");
            let (message, event) = (sources.remove(index), events.remove(index));
            let span = self.consume_span(message);
            describe(&span, &event);
            self.process_event(message, &event).instrument(span).await?;
        }
        for (message, event) in sources.into_iter().zip(events) {
            let span = self.consume_span(message);
            describe(&span, &event);
            self.process_event(message, &event).instrument(span).await?;
        }
        Ok(())
    }

    /// Acts on a message's verdict — nothing, or the retry or dead-letter topic — and
    /// records it on the current `consume` span. `dlq_reason` on the span is a short
    /// class (a metric label); the message itself goes into the dead letter's
    /// `dlq_reason` header.
    async fn settle(
        &self,
        message: &OwnedMessage,
        verdict: Verdict,
        dead_letter_class: &'static str,
    ) -> anyhow::Result<()> {
        let span = tracing::Span::current();
        let attempt: u32 = header(message, "retry_attempt")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let outcome = match &verdict {
            Verdict::Applied => "applied",
            Verdict::Duplicate => "duplicate",
            Verdict::Ignored => "ignored",
            Verdict::Retry(_) if attempt < MAX_RETRIES => "retried",
            Verdict::Retry(_) | Verdict::DeadLetter(_) => "dead_lettered",
        };
        span.record("outcome", outcome);
        match &verdict {
            Verdict::Retry(_) if attempt >= MAX_RETRIES => {
                span.record("failure", "transient");
                span.record("dlq_reason", "retries_exhausted");
            }
            Verdict::Retry(_) => {
                span.record("failure", "transient");
            }
            Verdict::DeadLetter(_) => {
                span.record("failure", "permanent");
                span.record("dlq_reason", dead_letter_class);
            }
            Verdict::Applied | Verdict::Duplicate | Verdict::Ignored => {}
        }
        match verdict {
            Verdict::Applied | Verdict::Ignored => {}
            Verdict::Duplicate => {
                tracing::info!(consumer = %self.name, offset = message.offset(), "duplicate event skipped")
            }
            Verdict::Retry(reason) if attempt < MAX_RETRIES => {
                let delay = Duration::from_millis(500 * 4u64.pow(attempt)); // 0.5 s, 2 s, 8 s
                let not_before = chrono::Utc::now().timestamp_millis() + delay.as_millis() as i64;
                tracing::warn!(consumer = %self.name, reason, attempt = attempt + 1, "handler failed; retrying via the retry topic");
                let headers = copy_headers(message)
                    .insert(Header {
                        key: "retry_attempt",
                        value: Some(&(attempt + 1).to_string()),
                    })
                    .insert(Header {
                        key: "retry_not_before",
                        value: Some(&not_before.to_string()),
                    })
                    .insert(Header {
                        key: "retry_reason",
                        value: Some(&reason),
                    });
                self.forward(&retry_topic(original_topic(message)), message, headers)
                    .await?;
            }
            Verdict::Retry(reason) | Verdict::DeadLetter(reason) => {
                tracing::error!(consumer = %self.name, reason, topic = message.topic(), offset = message.offset(), "dead-lettering message");
                let headers = copy_headers(message)
                    .insert(Header {
                        key: "dlq_reason",
                        value: Some(&reason),
                    })
                    .insert(Header {
                        key: "dlq_source_topic",
                        value: Some(message.topic()),
                    })
                    .insert(Header {
                        key: "dlq_source_partition",
                        value: Some(&message.partition().to_string()),
                    })
                    .insert(Header {
                        key: "dlq_source_offset",
                        value: Some(&message.offset().to_string()),
                    })
                    .insert(Header {
                        key: "dlq_consumer",
                        value: Some(&self.name),
                    });
                self.forward(&dlq_topic(original_topic(message)), message, headers)
                    .await?;
            }
        }
        Ok(())
    }

    async fn forward(
        &self,
        topic: &str,
        message: &OwnedMessage,
        headers: OwnedHeaders,
    ) -> anyhow::Result<()> {
        let mut record = FutureRecord::to(topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Duration::from_secs(60))
            .await
            .map_err(|(err, _)| anyhow::anyhow!("forwarding to {topic}: {err}"))?;
        Ok(())
    }
}

/// The message's envelope, or the verdict on a message that has none (and the
/// short class of that reason).
fn decode(message: &OwnedMessage) -> Result<Envelope, (Verdict, &'static str)> {
    match message.payload().map(serde_json::from_slice::<Envelope>) {
        None => Err((Verdict::DeadLetter("empty message".into()), "empty")),
        Some(Err(err)) => Err((
            Verdict::DeadLetter(format!("unreadable envelope: {err}")),
            "unreadable_envelope",
        )),
        Some(Ok(event)) => Ok(event),
    }
}

/// Records which event a `consume` span is about.
fn describe(span: &tracing::Span, event: &Envelope) {
    span.record("event_type", event.event_type.as_str());
    span.record("order_id", tracing::field::display(event.order_id));
}

fn header<'m>(message: &'m impl Message, name: &str) -> Option<&'m str> {
    let headers = message.headers()?;
    headers
        .iter()
        .filter(|h| h.key == name)
        .last()
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The topic a message belongs to, for a message read from a retry topic.
fn original_topic(message: &OwnedMessage) -> &str {
    message
        .topic()
        .strip_suffix(".retry")
        .unwrap_or(message.topic())
}

/// The message's headers, minus earlier retry bookkeeping (replaced, not piled up).
fn copy_headers(message: &OwnedMessage) -> OwnedHeaders {
    let mut copy = OwnedHeaders::new();
    if let Some(headers) = message.headers() {
        for h in headers.iter().filter(|h| !h.key.starts_with("retry_")) {
            copy = copy.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    copy
}

/// Messages waiting their turn, by key. Kafka keeps an order's events in sequence
/// within a partition; running messages concurrently must not undo that, so a
/// message starts only when no earlier message with its key is running. Messages
/// without a key queue per partition.
#[derive(Debug, Default)]
struct Lanes {
    /// One entry per busy key: the messages that arrived behind the running one.
    waiting: HashMap<Vec<u8>, VecDeque<OwnedMessage>>,
    /// Messages whose key is free, oldest first, waiting for a slot.
    ready: VecDeque<OwnedMessage>,
    held: usize,
}

impl Lanes {
    fn key(message: &OwnedMessage) -> Vec<u8> {
        match message.key() {
            Some(key) => key.to_vec(),
            None => format!("\0{}/{}", message.topic(), message.partition()).into_bytes(),
        }
    }

    fn push(&mut self, message: OwnedMessage) {
        self.held += 1;
        match self.waiting.entry(Self::key(&message)) {
            Entry::Occupied(mut busy) => busy.get_mut().push_back(message),
            Entry::Vacant(free) => {
                free.insert(VecDeque::new());
                self.ready.push_back(message);
            }
        }
    }

    /// Up to `n` messages whose keys are free, oldest first: no two of one key.
    fn take_ready(&mut self, n: usize) -> Vec<OwnedMessage> {
        let n = n.min(self.ready.len());
        self.ready.drain(..n).collect()
    }

    /// `message` finished: the next one of its key (if any) becomes ready.
    fn done(&mut self, message: &OwnedMessage) {
        self.held -= 1;
        let key = Self::key(message);
        if let Some(queue) = self.waiting.get_mut(&key) {
            match queue.pop_front() {
                Some(next) => self.ready.push_back(next),
                None => {
                    self.waiting.remove(&key);
                }
            }
        }
    }

    fn held(&self) -> usize {
        self.held
    }
}

/// Per partition: which offsets are still unfinished, so that the offset stored is
/// always below the lowest of them — never past a message that is not done.
#[derive(Debug, Default)]
struct Progress {
    partitions: HashMap<(String, i32), Partition>,
}

#[derive(Debug)]
struct Partition {
    unfinished: BTreeSet<i64>,
    /// The highest offset received (since the last rewind).
    highest: i64,
    /// The offset last stored: every message up to it is done.
    stored: i64,
}

impl Progress {
    fn received(&mut self, message: &OwnedMessage) {
        let offset = message.offset();
        let partition = self
            .partitions
            .entry((message.topic().to_owned(), message.partition()))
            .or_insert(Partition {
                unfinished: BTreeSet::new(),
                highest: offset - 1,
                stored: offset - 1,
            });
        if offset <= partition.highest {
            // Redelivered from an earlier commit (the partition came back after a
            // rebalance): count from here again.
            partition.highest = offset - 1;
            partition.stored = partition.stored.min(offset - 1);
        }
        partition.highest = offset;
        partition.unfinished.insert(offset);
    }

    /// `message` is done; returns the offset to store if it moved: the message before
    /// the lowest unfinished one, or the highest received when none is unfinished.
    fn finished(&mut self, message: &OwnedMessage) -> Option<i64> {
        let partition = self
            .partitions
            .get_mut(&(message.topic().to_owned(), message.partition()))?;
        partition.unfinished.remove(&message.offset());
        let done = match partition.unfinished.first() {
            Some(lowest) => lowest - 1,
            None => partition.highest,
        };
        (done > partition.stored).then(|| {
            partition.stored = done;
            done
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn message(key: &str, partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            Some(key.as_bytes().to_vec()),
            "orders".into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    #[test]
    fn messages_of_one_key_wait_for_each_other_and_others_do_not() {
        let mut lanes = Lanes::default();
        lanes.push(message("a", 0, 0));
        lanes.push(message("a", 0, 1));
        lanes.push(message("b", 0, 2));
        let ready = lanes.take_ready(10);
        let offsets: Vec<i64> = ready.iter().map(|m| m.offset()).collect();
        assert_eq!(offsets, [0, 2], "b need not wait for a; a's second waits");
        assert!(lanes.take_ready(10).is_empty());
        lanes.done(&ready[0]);
        assert_eq!(lanes.take_ready(10)[0].offset(), 1);
        assert_eq!(lanes.held(), 2);
    }

    #[test]
    fn the_offset_stored_never_passes_an_unfinished_message() {
        let mut progress = Progress::default();
        let (m5, m6, m7) = (message("a", 0, 5), message("b", 0, 6), message("c", 0, 7));
        for m in [&m5, &m6, &m7] {
            progress.received(m);
        }
        assert_eq!(progress.finished(&m7), None, "5 and 6 are not done");
        assert_eq!(progress.finished(&m5), Some(5));
        assert_eq!(
            progress.finished(&m6),
            Some(7),
            "everything up to 7 is done"
        );
        // Another partition counts on its own.
        let other = message("d", 1, 40);
        progress.received(&other);
        assert_eq!(progress.finished(&other), Some(40));
    }

    #[test]
    fn a_partition_redelivered_from_an_earlier_commit_counts_from_there() {
        let mut progress = Progress::default();
        let first = [message("a", 0, 10), message("b", 0, 11)];
        for m in &first {
            progress.received(m);
        }
        assert_eq!(progress.finished(&first[0]), Some(10));
        assert_eq!(progress.finished(&first[1]), Some(11));
        // The partition moved away before 11 was committed and came back: the new
        // assignment starts at 11 again. What is stored follows it from there.
        let again = message("b", 0, 11);
        progress.received(&again);
        assert_eq!(progress.finished(&again), Some(11));
        let next = message("c", 0, 12);
        progress.received(&next);
        assert_eq!(progress.finished(&next), Some(12));
    }
}
