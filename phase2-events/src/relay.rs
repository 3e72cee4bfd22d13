//! The outbox relay: moves committed outbox rows to Kafka, at least once.
//!
//! Loop: take the oldest unpublished rows → send them with the idempotent producer →
//! wait for the broker's acknowledgement → mark exactly those rows published, in one
//! statement.
//!
//! * **Flows under way first.** "Oldest" is per lane: rows continuing a flow (an
//!   event with a cause) go before rows starting one (`OrderPlaced`). Under overload
//!   a burst of new orders then waits in the outbox instead of queueing ahead of the
//!   status events of the orders in flight, so the pipeline keeps finishing orders
//!   at its sustained rate (migration `900002_outbox_lanes.sql` says why this never
//!   reorders one order's events).
//! * **A window on flows under way.** Lanes alone are not enough: once published, a
//!   burst of `OrderPlaced` floods the topics, and every stage spends its time moving
//!   new orders one step on instead of finishing old ones — past saturation fewer and
//!   fewer orders finish. With a [`FlowWindow`] the relay publishes a new flow only
//!   while fewer than `limit` are under way (started and not final), so the work in
//!   the pipeline is bounded and each order that enters it finishes; the rest wait in
//!   the outbox, accepted and durable. A finished flow commits its final event to the
//!   outbox, whose `NOTIFY` wakes the relay to let the next one in.
//! * **At least once, never lost.** A row is marked only after the broker has it. A
//!   crash between the two (see [`RelayFaults`]) republishes the row after a restart:
//!   a duplicate, which consumers absorb by `event_id` — never a loss.
//! * **Mark by id, not by range.** BIGSERIAL ids are handed out at insert time but
//!   become visible at commit time, so id 41 can appear *after* 42 was published.
//!   Marking "everything up to 42" would silently drop 41.
//! * **One publisher at a time.** Several relays may run (for availability); only the
//!   holder of a PostgreSQL advisory lock publishes, so events of one order are never
//!   sent by two relays in a different order. When the leader's session dies, the lock
//!   is released and a standby takes over.
//! * **Woken, not spinning.** A trigger sends `NOTIFY outbox` at commit; the relay
//!   `LISTEN`s, and also polls every `poll_interval` in case a notification was missed.

use crate::events::Envelope;
use anyhow::Context;
use common::shutdown::CancellationToken;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::postgres::PgListener;
use sqlx::{AnyPool, Connection, Row};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::Instrument;

/// Arbitrary, fixed: the advisory lock that makes one relay the publisher.
const LEADER_LOCK: i64 = 0x0F0E_0B0E_0000_0001;

/// Faults a scenario test can switch on.
#[derive(Debug, Default)]
pub struct RelayFaults {
    /// Publish a batch, then stop before marking it: a crash at the worst moment.
    pub crash_before_marking: AtomicBool,
    /// Publish every row twice: a duplicating producer (scenario 2). Consumers must
    /// apply each event once anyway.
    pub duplicate_publishes: AtomicBool,
}

#[derive(Clone)]
pub struct Relay {
    /// Whose outbox this is (`order`, `payment`, …): the `database` of its spans.
    name: String,
    pool: AnyPool,
    /// For LISTEN (a dedicated PostgreSQL connection).
    database_url: String,
    producer: FutureProducer,
    poll_interval: Duration,
    batch_size: i64,
    /// The batch's SELECT ([`select_batch`]), with the flow window's room when there
    /// is one.
    select: String,
    faults: Arc<RelayFaults>,
}

/// How many flows may be under way at once (see the module docs).
#[derive(Debug, Clone)]
pub struct FlowWindow {
    limit: u32,
    /// A query counting the flows not finished yet (including those whose first
    /// event still waits here), e.g. the orders not in a final state.
    open_flows: String,
}

impl FlowWindow {
    pub fn new(limit: u32, open_flows: &str) -> Self {
        FlowWindow {
            limit,
            open_flows: open_flows.to_owned(),
        }
    }

    /// How many new flows may start now, as SQL: the limit, less the flows open and
    /// already published (open, minus those whose first event still waits here),
    /// between 0 and a batch (`$1`). Part of the batch's own SELECT, so the count
    /// and the rows come from one snapshot and one round trip.
    fn room(&self) -> String {
        format!(
            "GREATEST(0, LEAST($1, {} - (({}) - (SELECT count(*) FROM outbox \
             WHERE published_at IS NULL AND starts_flow))))",
            self.limit, self.open_flows
        )
    }
}

/// Continuing rows first, then as many new flows as `room` (SQL) allows, oldest first
/// in each lane.
fn select_batch(room: &str) -> String {
    format!(
        "(SELECT id, topic, message_key, envelope, starts_flow FROM outbox \
           WHERE published_at IS NULL AND NOT starts_flow ORDER BY id LIMIT $1) \
         UNION ALL \
         (SELECT id, topic, message_key, envelope, starts_flow FROM outbox \
           WHERE published_at IS NULL AND starts_flow ORDER BY id LIMIT {room}) \
         ORDER BY starts_flow, id LIMIT $1"
    )
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("poll_interval", &self.poll_interval)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl Relay {
    pub fn new(pool: AnyPool, database_url: &str, producer: FutureProducer) -> Self {
        Relay {
            name: "outbox".to_owned(),
            pool,
            database_url: database_url.to_owned(),
            producer,
            poll_interval: Duration::from_secs(1),
            batch_size: 200,
            select: select_batch("$1"),
            faults: Arc::default(),
        }
    }

    /// Names the relay after the service whose outbox it publishes.
    pub fn named(mut self, service: &str) -> Self {
        self.name = service.to_owned();
        self
    }

    /// Rows read, sent and marked per batch (200 by default).
    pub fn with_batch_size(mut self, rows: i64) -> Self {
        self.batch_size = rows;
        self
    }

    /// Publishes a new flow only while fewer than the window's limit are under way.
    pub fn with_flow_window(mut self, window: FlowWindow) -> Self {
        self.select = select_batch(&window.room());
        self
    }

    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    pub fn faults(&self) -> Arc<RelayFaults> {
        Arc::clone(&self.faults)
    }

    /// Publishes until `shutdown` is cancelled (or an injected crash).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut listener = PgListener::connect(&self.database_url)
            .await
            .context("relay: connecting to LISTEN for outbox notifications")?;
        listener.listen("outbox").await?;
        // The advisory lock belongs to a session: a dedicated connection (not a pooled
        // one, which would outlive a crashed relay in the pool, lock and all) that
        // closes when this relay stops, handing leadership to a standby.
        let mut lock_conn = sqlx::AnyConnection::connect(&self.database_url)
            .await
            .context("relay: opening the leader-lock connection")?;
        let mut leader = false;
        loop {
            if !leader {
                leader = sqlx::query("SELECT pg_try_advisory_lock($1) AS locked")
                    .bind(LEADER_LOCK)
                    .fetch_one(&mut lock_conn)
                    .await?
                    .try_get::<bool, _>("locked")?;
                if leader {
                    tracing::info!("relay is the leader: publishing the outbox");
                }
            }
            let published = if leader {
                self.publish_batch().await?
            } else {
                0
            };
            if published as i64 == self.batch_size {
                continue; // more waiting: no pause
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                notification = listener.recv() => { notification?; }
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
        tracing::info!("relay stopped");
        Ok(())
    }

    /// One batch: returns how many rows were published and marked.
    pub async fn publish_batch(&self) -> anyhow::Result<usize> {
        // A `relay_batch` span says how many rows went out (phase 3 counts them).
        let span = tracing::info_span!(
            "relay_batch",
            database = %self.name,
            published = tracing::field::Empty
        );
        let published = self.publish_rows().instrument(span.clone()).await?;
        span.record("published", published);
        Ok(published)
    }

    async fn publish_rows(&self) -> anyhow::Result<usize> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(self.select.as_str()))
            .bind(self.batch_size)
            .fetch_all(&self.pool)
            .await
            .context("reading the outbox")?;
        if rows.is_empty() {
            return Ok(0);
        }
        // Queue every send first (the producer batches and pipelines them, in order
        // per partition), then await the acknowledgements.
        let mut pending = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let topic: String = row.try_get("topic")?;
            let key: String = row.try_get("message_key")?;
            let value: String = row.try_get("envelope")?;
            let envelope: Envelope =
                serde_json::from_str(&value).context("outbox row with a bad envelope")?;
            let mut headers = OwnedHeaders::new();
            for (name, header_value) in envelope.headers() {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(&header_value),
                });
            }
            // Normally one copy; the duplicating fault sends each row twice.
            let copies = if self.faults.duplicate_publishes.load(Ordering::SeqCst) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                // Each row's publish is a span in the trace of the event it carries.
                let span = tracing::info_span!("relay_publish", topic = %topic, outbox_id = id);
                common::telemetry::continue_trace(&span, envelope.traceparent.as_deref());
                let record = FutureRecord::to(&topic)
                    .key(&key)
                    .payload(&value)
                    .headers(headers.clone());
                // `send_result` hands the record to the producer *now* and returns the
                // acknowledgement to wait for. (`send(…).await` would enqueue it only
                // when first awaited: awaited one after another, every row would wait
                // for the previous row's acknowledgement — one message per round trip.)
                let sent = self.producer.send_result(record).map_err(|(err, _)| err);
                pending.push((id, sent, span));
            }
        }
        let mut delivered = Vec::with_capacity(pending.len());
        for (id, sent, span) in pending {
            let acknowledged = match sent {
                Ok(ack) => match ack.instrument(span).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((err, _))) => Err(err.to_string()),
                    Err(_) => Err("the producer was dropped".to_owned()),
                },
                Err(err) => Err(err.to_string()),
            };
            if let Err(err) = acknowledged {
                // Later rows may still have been delivered; mark those we know of.
                tracing::warn!(outbox_id = id, error = %err, "relay: publish failed; will retry");
                break;
            }
            delivered.push(id);
        }
        if self.faults.crash_before_marking.load(Ordering::SeqCst) {
            anyhow::bail!(
                "injected fault: relay crashed after publishing {} rows, before marking them",
                delivered.len()
            );
        }
        self.mark_published(&delivered).await?;
        tracing::debug!(published = delivered.len(), "relay: batch published");
        Ok(delivered.len())
    }

    async fn mark_published(&self, ids: &[i64]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        // Exactly these ids (see the module docs for why not a range).
        // `IN (($2), ($3), …)`: one row per id.
        let sql = format!(
            "UPDATE outbox SET published_at = $1 WHERE id IN ({})",
            common::db::placeholders(ids.len(), 1, 2)
        );
        let mut query =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(common::db::timestamp(common::db::now()));
        for id in ids {
            query = query.bind(*id);
        }
        query
            .execute(&self.pool)
            .await
            .context("marking outbox rows published")?;
        Ok(())
    }
}
