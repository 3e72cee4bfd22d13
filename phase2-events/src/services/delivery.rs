//! The delivery simulator: drives confirmed orders through preparing → out for
//! delivery → delivered, with configurable delays.
//!
//! `OrderConfirmed` only *schedules* a delivery (a row with `due_at`); a ticker moves
//! due rows to their next stage and announces each step through the outbox. Sleeping
//! inside the consumer instead would hold up every other order on the partition.
//! Several instances can run: each claims due rows with `FOR UPDATE SKIP LOCKED`.

use super::enqueue;
use crate::config::Settings;
use crate::consumer::{EventConsumer, HandleError, Handler, Transactional};
use crate::events::Envelope;
use crate::flow::{Service, Topics, event};
use common::shutdown::CancellationToken;
use sqlx::{Any, AnyPool, Row, Transaction};
use std::sync::Arc;
use std::time::Duration;

pub const SERVICE: Service = Service::Delivery;

pub fn migrators() -> Vec<sqlx::migrate::Migrator> {
    vec![common::embed_migrations!(
        "migrations/delivery",
        ["000001_deliveries.sql", "000002_deliveries_traceparent.sql"]
    )]
}

/// The stages after `confirmed`, each with the event announcing it.
const STAGES: [(&str, &str); 3] = [
    ("preparing", event::DELIVERY_PREPARING),
    ("out_for_delivery", event::DELIVERY_DISPATCHED),
    ("delivered", event::DELIVERY_COMPLETED),
];

#[derive(Debug, Clone, Copy)]
pub struct Delays {
    pub prepare: Duration,
    pub dispatch: Duration,
    pub deliver: Duration,
}

impl Delays {
    /// How long an order stays in `stage` before its next step.
    fn after(&self, stage: &str) -> Duration {
        match stage {
            "confirmed" => self.prepare,
            "preparing" => self.dispatch,
            _ => self.deliver,
        }
    }
}

fn due(after: Duration) -> String {
    common::db::timestamp(common::db::now() + chrono::Duration::from_std(after).unwrap_or_default())
}

/// Schedules confirmed orders.
#[derive(Debug, Clone)]
pub struct Scheduler {
    delays: Delays,
}

impl Handler for Scheduler {
    fn wants(&self, event_type: &str) -> bool {
        event_type == event::ORDER_CONFIRMED
    }

    async fn handle(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &Envelope,
    ) -> Result<(), HandleError> {
        if event.event_type != event::ORDER_CONFIRMED {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO deliveries (order_id, stage, due_at, correlation_id, last_event_id, traceparent) \
             VALUES ($1, 'confirmed', $2, $3, $4, $5) ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(event.order_id.to_string())
        .bind(due(self.delays.prepare))
        .bind(&event.correlation_id)
        .bind(event.event_id.to_string())
        .bind(common::telemetry::current_traceparent().or(event.traceparent.clone()))
        .execute(&mut **tx)
        .await
        ?;
        tracing::info!(order_id = %event.order_id, "delivery scheduled");
        Ok(())
    }
}

/// The most due deliveries one tick moves, in one transaction; a full tick is
/// followed by another at once.
const TICK_ROWS: usize = 200;

/// Moves due deliveries one stage on (at most [`TICK_ROWS`]); returns how many moved.
pub async fn tick(pool: &AnyPool, topics: &Topics, delays: &Delays) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "SELECT order_id, stage, correlation_id, last_event_id, traceparent FROM deliveries \
         WHERE stage <> 'delivered' AND due_at <= $1 ORDER BY due_at LIMIT $2 \
         FOR UPDATE SKIP LOCKED",
    )
    .bind(common::db::timestamp(common::db::now()))
    .bind(TICK_ROWS as i64)
    .fetch_all(&mut *tx)
    .await?;
    for row in &rows {
        let order_id: String = row.try_get("order_id")?;
        let stage: String = row.try_get("stage")?;
        let position = STAGES
            .iter()
            .position(|(s, _)| *s == stage)
            .map_or(0, |i| i + 1);
        let Some((next, announce)) = STAGES.get(position) else {
            continue;
        };
        let mut step = Envelope::new(
            announce,
            order_id.parse()?,
            &row.try_get::<String, _>("correlation_id")?,
            serde_json::json!({ "stage": next }),
        );
        step.causation_id = row.try_get::<String, _>("last_event_id")?.parse().ok();
        step.traceparent = row.try_get("traceparent")?;
        enqueue(&mut tx, &topics.delivery, &step)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        sqlx::query(
            "UPDATE deliveries SET stage = $1, due_at = $2, last_event_id = $3 WHERE order_id = $4",
        )
        .bind(*next)
        .bind(due(delays.after(next)))
        .bind(step.event_id.to_string())
        .bind(&order_id)
        .execute(&mut *tx)
        .await?;
        tracing::info!(order_id, stage = *next, "delivery moved");
    }
    tx.commit().await?;
    Ok(rows.len())
}

/// The delivery simulator, built and ready to run.
#[derive(Debug)]
pub struct DeliveryService {
    pool: AnyPool,
    topics: Arc<Topics>,
    delays: Delays,
    consumer: EventConsumer<Transactional<Scheduler>>,
}

impl DeliveryService {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let pool = super::open_database(
            &settings.delivery_database_url,
            settings.db_max_connections,
            migrators(),
        )
        .await?;
        let (topics, producer) = super::connect_kafka(settings).await?;
        let topics = Arc::new(topics);
        let delays = Delays {
            prepare: settings.prepare_after,
            dispatch: settings.dispatch_after,
            deliver: settings.deliver_after,
        };
        let consumer = super::consumer(
            settings,
            &topics,
            SERVICE,
            producer,
            Transactional {
                pool: pool.clone(),
                handler: Scheduler { delays },
            },
        );
        Ok(DeliveryService {
            pool,
            topics,
            delays,
            consumer,
        })
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let consumer = tokio::spawn(super::supervise_consumer(self.consumer, shutdown.clone()));
        // Tick often enough for short test delays, not so often that it spins.
        let period = self
            .delays
            .prepare
            .min(self.delays.dispatch)
            .min(self.delays.deliver)
            / 2;
        let mut ticker = tokio::time::interval(
            period.clamp(Duration::from_millis(20), Duration::from_millis(500)),
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            loop {
                match tick(&self.pool, &self.topics, &self.delays).await {
                    Ok(moved) if moved == TICK_ROWS => continue, // more are due
                    Ok(_) => break,
                    Err(err) => {
                        tracing::warn!(
                            error = format!("{err:#}"),
                            "delivery tick failed; next tick retries"
                        );
                        break;
                    }
                }
            }
        }
        consumer.await?;
        self.pool.close().await;
        Ok(())
    }
}
