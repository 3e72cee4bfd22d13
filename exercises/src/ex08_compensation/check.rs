//! The checker of exercise 8: phase 2's real consumer, running the learner's
//! inventory handler, on real topics and phase 2's inventory schema in PostgreSQL.
//! The checker plays the saga: it publishes `OrderPlaced` and `OrderCancelled` in
//! the orders the real system can produce, and reads stock, reservations and the
//! outbox afterwards.

use super::{CompensatingInventory, Envelope, Line, Topics, event};
use crate::infra::{self, Database, Kafka};
use crate::{Failure, ensure};
use common::domain::{CancellationReason, OrderId, OrderStatus};
use common::shutdown::CancellationToken;
use phase2_events::consumer::{EventConsumer, Transactional, dlq_topic, retry_topic};
use phase2_events::flow::{OrderPlaced, StatusChanged};
use sqlx::{AnyPool, Row};
use std::sync::Arc;
use std::time::Duration;

const PIZZA: &str = "pizza-margherita";
const TIRAMISU: &str = "tiramisu";

pub fn check<I: CompensatingInventory>() -> Result<(), Failure> {
    infra::block_on(async {
        let db = Database::create(phase2_events::services::inventory::migrators()).await?;
        let result = scenarios::<I>(&db.pool).await;
        db.close().await;
        result
    })
}

fn placed(order: OrderId, items: &[(&str, i64)]) -> Envelope {
    let payload = OrderPlaced {
        status: OrderStatus::Placed,
        customer_id: "c-8".into(),
        total_cents: 2_000,
        items: items
            .iter()
            .map(|(sku, qty)| Line {
                sku: (*sku).into(),
                qty: *qty,
            })
            .collect(),
    };
    Envelope::new(
        event::ORDER_PLACED,
        order,
        "exercise-8",
        serde_json::to_value(payload).expect("serializable"),
    )
}

fn cancelled(order: OrderId, reason: CancellationReason) -> Envelope {
    let payload = StatusChanged {
        status: OrderStatus::Cancelled,
        cancellation_reason: Some(reason),
    };
    Envelope::new(
        event::ORDER_CANCELLED,
        order,
        "exercise-8",
        serde_json::to_value(payload).expect("serializable"),
    )
}

struct Saga<'a> {
    pool: &'a AnyPool,
    kafka: &'a Kafka,
    topics: &'a Topics,
    group: String,
}

impl Saga<'_> {
    /// Publishes `event` on `orders` and waits until the consumer has processed it
    /// (its `processed_events` row is committed with the handler's effect).
    async fn send(&self, event: &Envelope) -> Result<(), Failure> {
        let payload = serde_json::to_vec(event).expect("serializable");
        self.kafka
            .send(
                &self.topics.orders,
                &event.order_id.to_string(),
                Some(&payload),
                &[],
            )
            .await?;
        // A handler error rolls the event back and sends it to the retry topic, then
        // (after 0.5 + 2 + 8 s) to the dead-letter topic: look there between waits.
        let what = format!(
            "the inventory consumer processed {} of order {}",
            event.event_type, event.order_id
        );
        for wait in [5, 10, 30] {
            if self.processed(event, Duration::from_secs(wait)).await {
                return Ok(());
            }
            if let Some(reason) = self.why_not(event).await? {
                return Err(Failure(format!(
                    "{} of order {} was not applied: your handler failed with \"{reason}\"",
                    event.event_type, event.order_id
                )));
            }
        }
        Err(Failure(format!("waited 45s and still not: {what}")))
    }

    /// Whether the event's `processed_events` row appears within `limit`.
    async fn processed(&self, event: &Envelope, limit: Duration) -> bool {
        let (pool, group, id) = (self.pool, self.group.clone(), event.event_id.to_string());
        infra::eventually("", limit, || {
            let (group, id) = (group.clone(), id.clone());
            async move {
                sqlx::query(
                    "SELECT 1 AS one FROM processed_events WHERE consumer = $1 AND event_id = $2",
                )
                .bind(group)
                .bind(id)
                .fetch_optional(pool)
                .await
                .ok()
                .flatten()
                .map(|_| ())
            }
        })
        .await
        .is_ok()
    }

    /// The handler's error for `event`, from the dead-letter or retry topic.
    async fn why_not(&self, event: &Envelope) -> Result<Option<String>, Failure> {
        let id = event.event_id.to_string();
        for (topic, header) in [
            (dlq_topic(&self.topics.orders), "dlq_reason"),
            (retry_topic(&self.topics.orders), "retry_reason"),
        ] {
            let letters = self.kafka.read_all(&topic).await?;
            if let Some(reason) = letters
                .iter()
                .filter(|l| l.value.contains(&id))
                .filter_map(|l| l.headers.get(header))
                .next_back()
            {
                return Ok(Some(reason.clone()));
            }
        }
        Ok(None)
    }

    async fn stock(&self) -> Result<(i64, i64), Failure> {
        let mut values = Vec::new();
        for sku in [PIZZA, TIRAMISU] {
            let row = sqlx::query("SELECT available FROM stock WHERE sku = $1")
                .bind(sku)
                .fetch_one(self.pool)
                .await
                .map_err(db)?;
            values.push(row.try_get::<i64, _>("available").map_err(db)?);
        }
        Ok((values[0], values[1]))
    }

    async fn announced(&self, order: OrderId, event_type: &str) -> Result<i64, Failure> {
        sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE message_key = $1 AND event_type = $2 AND topic = $3")
            .bind(order.to_string())
            .bind(event_type)
            .bind(&self.topics.inventory)
            .fetch_one(self.pool)
            .await
            .and_then(|row| row.try_get("n"))
            .map_err(db)
    }

    /// The `causation_id` of the order's `StockReleased` in the outbox.
    async fn release_cause(&self, order: OrderId) -> Result<Option<uuid::Uuid>, Failure> {
        let row =
            sqlx::query("SELECT envelope FROM outbox WHERE message_key = $1 AND event_type = $2")
                .bind(order.to_string())
                .bind(event::STOCK_RELEASED)
                .fetch_optional(self.pool)
                .await
                .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let envelope: String = row.try_get("envelope").map_err(db)?;
        Ok(serde_json::from_str::<Envelope>(&envelope)
            .ok()
            .and_then(|e| e.causation_id))
    }

    async fn reservation(&self, order: OrderId) -> Result<Option<String>, Failure> {
        sqlx::query("SELECT status FROM reservations WHERE order_id = $1")
            .bind(order.to_string())
            .fetch_optional(self.pool)
            .await
            .map_err(db)?
            .map(|row| row.try_get::<String, _>("status").map_err(db))
            .transpose()
    }
}

fn db(err: sqlx::Error) -> Failure {
    Failure(format!("database: {err}"))
}

async fn scenarios<I: CompensatingInventory>(pool: &AnyPool) -> Result<(), Failure> {
    let kafka = Kafka::create(
        "exercise8",
        &["orders", "orders.retry", "orders.dlq", "inventory"],
    )
    .await?;
    let topics = Topics::new(&kafka.namespace);
    for (sku, available) in [(PIZZA, 10), (TIRAMISU, 3)] {
        sqlx::query("UPDATE stock SET available = $1 WHERE sku = $2")
            .bind(available)
            .bind(sku)
            .execute(pool)
            .await
            .map_err(db)?;
    }
    let group = topics.group(phase2_events::flow::Service::Inventory);
    let consumer = EventConsumer {
        name: group.clone(),
        brokers: kafka.brokers.clone(),
        instance: None,
        when_unreachable: phase2_events::config::WhenUnreachable::Pause,
        topics: vec![topics.orders.clone()],
        producer: kafka.producer.clone(),
        effect: Transactional {
            pool: pool.clone(),
            handler: I::new(Arc::new(topics.clone())),
        },
    };
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    let saga = Saga {
        pool,
        kafka: &kafka,
        topics: &topics,
        group,
    };
    let result = story(&saga).await;
    shutdown.cancel();
    let _ = running.await;
    result
}

async fn story(saga: &Saga<'_>) -> Result<(), Failure> {
    // 1. Reserved, then the payment failed: the stock comes back, once, announced.
    let a = OrderId::new();
    saga.send(&placed(a, &[(PIZZA, 2), (TIRAMISU, 1)])).await?;
    let held = saga.stock().await?;
    ensure(held == (8, 2), || {
        format!(
            "after reserving 2 pizzas and 1 tiramisu of 10 and 3, stock is {held:?}, expected (8, 2)"
        )
    })?;
    let cancel = cancelled(a, CancellationReason::PaymentFailed);
    saga.send(&cancel).await?;
    let back = saga.stock().await?;
    ensure(back == (10, 3), || {
        format!(
            "the payment failed after the stock was reserved and the order was cancelled, but stock \
             is {back:?} (pizza, tiramisu), expected (10, 3): the reservation must be released"
        )
    })?;
    let status = saga.reservation(a).await?;
    ensure(status.as_deref() == Some("released"), || {
        format!(
            "after the release the reservation says {status:?}; mark it 'released', or the next \
             cancel cannot tell that it was already compensated"
        )
    })?;
    let released = saga.announced(a, event::STOCK_RELEASED).await?;
    ensure(released == 1, || {
        format!(
            "{released} StockReleased events in the outbox for the released order; exactly one must \
             announce the compensation (enqueue it in the same transaction)"
        )
    })?;

    let caused_by = saga.release_cause(a).await?;
    ensure(caused_by == Some(cancel.event_id), || {
        format!(
            "StockReleased must say what caused it (causation_id = the OrderCancelled event's id, \
             {}), so the flow can be traced; it says {caused_by:?}. `event.caused(..)` does that",
            cancel.event_id
        )
    })?;

    // 2. The saga cancels again (a retry with a new event id): nothing more comes back.
    saga.send(&cancelled(a, CancellationReason::PaymentFailed))
        .await?;
    let again = saga.stock().await?;
    let released = saga.announced(a, event::STOCK_RELEASED).await?;
    ensure(again == (10, 3) && released == 1, || {
        format!(
            "a second OrderCancelled for the same order (a different event id, so processed_events \
             does not stop it) left stock at {again:?} with {released} StockReleased; expected \
             (10, 3) and 1 — the food was put back twice"
        )
    })?;

    // 3. Out of stock: nothing was taken, so the cancel gives nothing back.
    let b = OrderId::new();
    saga.send(&placed(b, &[(PIZZA, 50)])).await?;
    let rejected = saga.announced(b, event::OUT_OF_STOCK).await?;
    ensure(rejected == 1, || {
        "50 pizzas of 10 must be OutOfStock".to_string()
    })?;
    saga.send(&cancelled(b, CancellationReason::OutOfStock))
        .await?;
    let after = saga.stock().await?;
    ensure(after == (10, 3), || {
        format!(
            "an order rejected for lack of stock was cancelled and stock became {after:?}, expected \
             (10, 3): it was never reserved, so there is nothing to give back"
        )
    })?;
    let released = saga.announced(b, event::STOCK_RELEASED).await?;
    ensure(released == 0, || {
        format!(
            "{released} StockReleased announced for an order whose stock was never held (it was \
             rejected): announce a release only when something was released"
        )
    })?;

    // 4. The cancel overtakes the reservation (OrderPlaced waited in the retry topic).
    let c = OrderId::new();
    saga.send(&cancelled(c, CancellationReason::PaymentFailed))
        .await?;
    saga.send(&placed(c, &[(PIZZA, 4)])).await?;
    let late = saga.stock().await?;
    let status = saga.reservation(c).await?;
    let released = saga.announced(c, event::STOCK_RELEASED).await?;
    ensure(released == 0, || {
        format!(
            "{released} StockReleased announced for an order cancelled before anything was \
             reserved: nothing was released"
        )
    })?;
    ensure(
        late == (10, 3) && status.as_deref() != Some("reserved"),
        || {
            format!(
                "the order was cancelled before its OrderPlaced arrived; the late reservation then held \
             stock ({late:?}, reservation {status:?}) for an order that will never be paid. \
             Remember the cancel (a 'voided' reservation row) so a late reserve does nothing"
            )
        },
    )
}
