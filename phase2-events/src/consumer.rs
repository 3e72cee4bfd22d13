//! An at-least-once, idempotent Kafka consumer with retry and dead-letter topics.
//!
//! For each message, in partition order:
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
//!    Committing before processing is how data is lost quietly.
//!
//! Dead letters carry: `dlq_reason`, `dlq_source_topic`, `dlq_source_partition`,
//! `dlq_source_offset`, `dlq_consumer`, plus the original headers.
//!
//! Each message is handled inside a `consume` span whose fields record what became
//! of it (`outcome`: applied, duplicate, retried, dead_lettered; `failure`;
//! `dlq_reason` as a short class) and which continues the trace in the message's
//! `traceparent` header. Phase 3 turns these spans into metrics and traces; here they
//! only give every log line of a message its context.

use crate::events::{DecodeError, Envelope};
use anyhow::Context;
use common::shutdown::CancellationToken;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::{Any, AnyPool, Transaction};
use std::future::Future;
use std::time::Duration;
use tracing::Instrument;

/// Attempts through the retry topic before a message is dead-lettered.
pub const MAX_RETRIES: u32 = 3;

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
    fn apply<'a>(
        &'a self,
        consumer: &'a str,
        event: &'a Envelope,
    ) -> impl Future<Output = anyhow::Result<Verdict>> + Send + 'a;
}

/// The outcome of applying one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Applied,
    /// Seen before (a redelivery): skipped.
    Duplicate,
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
    async fn apply(&self, consumer: &str, event: &Envelope) -> anyhow::Result<Verdict> {
        let mut tx = self.pool.begin().await.context("consumer: begin")?;
        // One event of an order at a time, per consumer. Kafka keeps an order's
        // events in sequence only within a partition; the retry consumer and, during a
        // rebalance, a second instance may hold another event of the same order at the
        // same moment (say, a retried `OrderPlaced` still charging while
        // `OrderCancelled` arrives). This lock, held until commit, makes the second
        // wait for the first instead of deciding on a state that is about to change.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("{consumer}/{}", event.order_id))
            .execute(&mut *tx)
            .await
            .context("consumer: locking the order")?;
        let claimed = sqlx::query(
            "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (consumer, event_id) DO NOTHING",
        )
        .bind(consumer)
        .bind(event.event_id.to_string())
        .bind(common::db::timestamp(common::db::now()))
        .execute(&mut *tx)
        .await
        .context("consumer: recording the event")?;
        if claimed.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Verdict::Duplicate);
        }
        match self.handler.handle(&mut tx, event).await {
            Ok(()) => {
                tx.commit().await.context("consumer: commit")?;
                Ok(Verdict::Applied)
            }
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
}

/// Names derived from a topic.
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
        let consumer: StreamConsumer<RebalanceLog> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
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
            self.consume(&main, &shutdown),
            self.consume(&retry, &shutdown)
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

    /// One consumer's loop: process each message to completion, then store its offset.
    async fn consume(
        &self,
        consumer: &StreamConsumer<RebalanceLog>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => break,
                message = consumer.recv() => message,
            };
            let message = match message {
                Ok(message) => message,
                Err(err) => {
                    tracing::warn!(consumer = %self.name, error = %err, "receive error; continuing");
                    continue;
                }
            };
            self.wait_until_due(&message, shutdown).await;
            if shutdown.is_cancelled() {
                break; // not processed, not stored: the next owner gets it
            }
            // One `consume` span per message: its fields say what happened (phase 3
            // counts and times them), and it continues the trace the event carries.
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
            common::telemetry::continue_trace(&span, header(&message, "traceparent"));
            self.process(&message).instrument(span).await?;
            consumer.store_offset_from_message(&message)?;
        }
        // Nothing to commit by hand: dropping the consumer closes it, and closing
        // commits the stored offsets (see [`RebalanceLog`]). Anything not stored is
        // redelivered to the next owner — and skipped as a duplicate.
        Ok(())
    }

    /// Retry-topic messages are not handled before their `retry_not_before` time.
    async fn wait_until_due(&self, message: &BorrowedMessage<'_>, shutdown: &CancellationToken) {
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

    /// Handles one message to completion: applied, skipped, retried or dead-lettered.
    async fn process(&self, message: &BorrowedMessage<'_>) -> anyhow::Result<()> {
        let span = tracing::Span::current();
        // `dlq_reason` on the span is a short class (a metric label); the message
        // itself goes into the dead letter's `dlq_reason` header.
        let (verdict, dead_letter_class) =
            match message.payload().map(serde_json::from_slice::<Envelope>) {
                None => (Verdict::DeadLetter("empty message".into()), "empty"),
                Some(Err(err)) => (
                    Verdict::DeadLetter(format!("unreadable envelope: {err}")),
                    "unreadable_envelope",
                ),
                Some(Ok(event)) => {
                    span.record("event_type", event.event_type.as_str());
                    span.record("order_id", tracing::field::display(event.order_id));
                    (self.effect.apply(&self.name, &event).await?, "permanent")
                }
            };
        let attempt: u32 = header(message, "retry_attempt")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let outcome = match &verdict {
            Verdict::Applied => "applied",
            Verdict::Duplicate => "duplicate",
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
            Verdict::Applied | Verdict::Duplicate => {}
        }
        match verdict {
            Verdict::Applied => {}
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
        message: &BorrowedMessage<'_>,
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

fn header<'m>(message: &'m BorrowedMessage<'_>, name: &str) -> Option<&'m str> {
    let headers = message.headers()?;
    headers
        .iter()
        .filter(|h| h.key == name)
        .last()
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The topic a message belongs to, for a message read from a retry topic.
fn original_topic<'m>(message: &'m BorrowedMessage<'_>) -> &'m str {
    message
        .topic()
        .strip_suffix(".retry")
        .unwrap_or(message.topic())
}

/// The message's headers, minus earlier retry bookkeeping (replaced, not piled up).
fn copy_headers(message: &BorrowedMessage<'_>) -> OwnedHeaders {
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
