// Exercise 8: your implementation.
//
// `cargo run -p exercises -- start 8` copies this starter to `exercises/mine/ex08_compensation.rs`;
// edit that copy (this file stays as shipped), then `cargo run -p exercises -- check 8`.
//
// The tables (phase2-events/migrations/inventory):
//   stock        (sku TEXT PRIMARY KEY, available BIGINT CHECK (available >= 0))
//   reservations (order_id TEXT PRIMARY KEY,
//                 status TEXT,  -- reserved | rejected | released | voided
//                 lines TEXT,   -- JSON [{"sku": …, "qty": …}]
//                 updated_at TEXT)

use super::{CompensatingInventory, Envelope, HandleError, Handler, Line, Topics, event};
use sqlx::{Any, Row, Transaction};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Inventory {
    /// Phase 2's reservation, reused as it is; the announcements go to `topics.inventory`.
    reserving: phase2_events::services::inventory::Inventory,
    #[allow(dead_code)] // you will need it
    topics: Arc<Topics>,
}

impl CompensatingInventory for Inventory {
    fn new(topics: Arc<Topics>) -> Self {
        Inventory {
            reserving: phase2_events::services::inventory::Inventory::new(topics.clone()),
            topics,
        }
    }
}

impl Handler for Inventory {
    async fn handle(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &Envelope,
    ) -> Result<(), HandleError> {
        match event.event_type.as_str() {
            event::ORDER_PLACED => self.reserving.reserve(tx, event).await,
            event::ORDER_CANCELLED => self.release(tx, event).await,
            _ => Ok(()),
        }
    }
}

fn transient(err: impl Into<anyhow::Error>) -> HandleError {
    HandleError::Transient(err.into())
}

impl Inventory {
    /// `OrderCancelled`: the compensation.
    async fn release(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &Envelope,
    ) -> Result<(), HandleError> {
        let row = sqlx::query("SELECT status, lines FROM reservations WHERE order_id = $1")
            .bind(event.order_id.to_string())
            .fetch_optional(&mut **tx)
            .await
            .map_err(transient)?;
        // TODO(exercise): every cancel puts the lines back — whatever the reservation's
        // status, however many times the order is cancelled. And a cancel that comes
        // before the reservation leaves nothing behind to stop it.
        if let Some(row) = row {
            let lines: String = row.try_get("lines").map_err(transient)?;
            let lines: Vec<Line> = serde_json::from_str(&lines).map_err(transient)?;
            for line in &lines {
                sqlx::query("UPDATE stock SET available = available + $1 WHERE sku = $2")
                    .bind(line.qty)
                    .bind(&line.sku)
                    .execute(&mut **tx)
                    .await
                    .map_err(transient)?;
            }
        }
        // TODO(exercise): nobody hears that the stock was released.
        Ok(())
    }
}
