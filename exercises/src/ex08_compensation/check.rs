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
use phase2_events::consumer::{EventConsumer, Transactional};
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
        let (pool, group, id) = (self.pool, self.group.clone(), event.event_id.to_string());
        infra::eventually(
            &format!("the inventory consumer processed {} of order {}", event.event_type, event.order_id),
            Duration::from_secs(45),
            || {
                let (group, id) = (group.clone(), id.clone());
                async move {
                    sqlx::query("SELECT 1 AS one FROM processed_events WHERE consumer = $1 AND event_id = $2")
                        .bind(group)
                        .bind(id)
                        .fetch_optional(pool)
                        .await
                        .ok()
                        .flatten()
                        .map(|_| ())
                }
            },
        )
        .await
        .map_err(|f| Failure(format!("{f} — was it dead-lettered? (a handler error rolls it back)")))
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
    let group = topics.group("inventory-service");
    let consumer = EventConsumer {
        name: group.clone(),
        brokers: kafka.brokers.clone(),
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
    saga.send(&cancelled(a, CancellationReason::PaymentFailed))
        .await?;
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

    // 4. The cancel overtakes the reservation (OrderPlaced waited in the retry topic).
    let c = OrderId::new();
    saga.send(&cancelled(c, CancellationReason::PaymentFailed))
        .await?;
    saga.send(&placed(c, &[(PIZZA, 4)])).await?;
    let late = saga.stock().await?;
    let status = saga.reservation(c).await?;
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
