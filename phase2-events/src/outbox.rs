//! The transactional outbox: publish an event if and only if the state change it
//! announces was committed.
//!
//! The tempting code — commit the order, then `producer.send(event)` — is a *dual
//! write*: a crash between the two loses the event forever (the order exists, nobody
//! hears of it), and a failed send after the commit has nowhere to go. Instead,
//! [`enqueue`] inserts the event into the `outbox` table **in the same transaction**
//! as the state change. The [`relay`](crate::relay) publishes outbox rows afterwards,
//! at least once.

use crate::events::Envelope;
use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Transaction};

/// The migrations every phase-2 service database gets (outbox, processed events).
pub fn shared_migrator() -> Migrator {
    common::embed_migrations!(
        "migrations/shared",
        [
            "900001_outbox_and_processed_events.sql",
            "900002_outbox_lanes.sql"
        ]
    )
}

/// Applies [`shared_migrator`]'s migrations.
pub async fn migrate_shared(pool: &AnyPool) -> anyhow::Result<()> {
    let mut migrator = shared_migrator();
    // Each service database also has its own migrations, applied by its own migrator.
    migrator.set_ignore_missing(true);
    migrator
        .run(pool)
        .await
        .context("applying the shared outbox migrations")
}

/// Adds `event` to the outbox inside the caller's transaction, in the lane of new
/// flows when it has no cause (see [`crate::relay`]).
pub async fn enqueue(
    tx: &mut Transaction<'_, Any>,
    topic: &str,
    event: &Envelope,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO outbox (topic, message_key, event_id, event_type, envelope, created_at, \
         starts_flow) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(topic)
    .bind(event.order_id.to_string())
    .bind(event.event_id.to_string())
    .bind(&event.event_type)
    .bind(serde_json::to_string(event)?)
    .bind(common::db::timestamp(common::db::now()))
    // The relay's lanes (migration 900002): an event with no cause starts a flow and
    // waits behind the events of flows already under way.
    .bind(event.causation_id.is_none())
    .execute(&mut **tx)
    .await
    .with_context(|| format!("adding {} to the outbox", event.event_type))?;
    Ok(())
}

/// The outbox's backlog in one query, the only one: how many events wait to be
/// published (`backlog`) and when the oldest of them was written (`oldest`, RFC 3339
/// text, NULL when none waits). `/ready`, the tests, phase 3's outbox probe and the
/// benchmark's queue probe all read it.
pub const BACKLOG: &str = "SELECT count(*) AS backlog, min(created_at) AS oldest FROM outbox \
                           WHERE published_at IS NULL";

/// What [`BACKLOG`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    pub events: i64,
    pub oldest: Option<String>,
}

/// The outbox's backlog ([`BACKLOG`]).
pub async fn backlog_of(pool: &AnyPool) -> anyhow::Result<Backlog> {
    use sqlx::Row;
    let row = sqlx::query(BACKLOG).fetch_one(pool).await?;
    Ok(Backlog {
        events: row.try_get("backlog")?,
        oldest: row.try_get("oldest")?,
    })
}

/// How many events wait to be published.
pub async fn backlog(pool: &AnyPool) -> anyhow::Result<i64> {
    Ok(backlog_of(pool).await?.events)
}
