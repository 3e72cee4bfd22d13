//! The inventory service: reserves stock on `OrderPlaced`, releases it on
//! `OrderCancelled` (saga compensation).
//!
//! **No overselling.** Two orders for the last pizza may be handled at the same time
//! (two partitions, two instances). Each reservation locks the stock rows it needs
//! (`SELECT … FOR UPDATE`, in sku order so two orders never wait on each other in a
//! cycle), checks, and only then subtracts — all or nothing, in the consumer's
//! transaction. The second order waits for the lock, then sees 0 and is rejected. A
//! `CHECK (available >= 0)` backs this up.
//!
//! | event            | reservations row | action                          | announces       |
//! |------------------|------------------|---------------------------------|-----------------|
//! | `OrderPlaced`    | none             | reserve every line, or none     | `StockReserved` / `OutOfStock` |
//! | `OrderPlaced`    | any (`voided`…)  | nothing: decided before         | —               |
//! | `OrderCancelled` | `reserved`       | put the stock back              | `StockReleased` |
//! | `OrderCancelled` | none             | `voided`, so a late reservation never happens | — |

use super::{ConsumerService, enqueue, to_json};
use crate::config::Settings;
use crate::consumer::{HandleError, Handler};
use crate::events::Envelope;
use crate::flow::{Line, OrderPlaced, OutOfStock, Service, Topics, event};
use sqlx::{Any, Row, Transaction};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const SERVICE: Service = Service::Inventory;

/// Raises every SKU's stock to at least `available` (phase 4's load runs: thousands
/// of orders a minute would empty the seeded 1,000 of each and turn the run into a
/// lesson about running out of pizza). Returns how many SKUs were raised.
pub async fn restock(pool: &sqlx::AnyPool, available: i64) -> anyhow::Result<u64> {
    let raised = sqlx::query("UPDATE stock SET available = $1 WHERE available < $1")
        .bind(available)
        .execute(pool)
        .await?;
    Ok(raised.rows_affected())
}

pub fn migrators() -> Vec<sqlx::migrate::Migrator> {
    vec![common::embed_migrations!(
        "migrations/inventory",
        ["000001_stock.sql"]
    )]
}

#[derive(Debug, Clone)]
pub struct Inventory {
    topics: Arc<Topics>,
}

impl Handler for Inventory {
    fn wants(&self, event_type: &str) -> bool {
        matches!(event_type, event::ORDER_PLACED | event::ORDER_CANCELLED)
    }

    async fn handle(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &Envelope,
    ) -> Result<(), HandleError> {
        match event.event_type.as_str() {
            event::ORDER_PLACED => self.reserve(tx, event).await,
            event::ORDER_CANCELLED => self.release(tx, event).await,
            _ => Ok(()),
        }
    }
}

impl Inventory {
    /// The handler of the inventory service, announcing on `topics.inventory`.
    pub fn new(topics: Arc<Topics>) -> Self {
        Inventory { topics }
    }

    /// `OrderPlaced`: reserve every line or none (public so that exercise 8, which
    /// asks for the compensation, can reuse the reservation as it is).
    pub async fn reserve(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &Envelope,
    ) -> Result<(), HandleError> {
        let placed: OrderPlaced = event.decode()?;
        if let Some((status, _)) = reservation(tx, event).await? {
            tracing::info!(order_id = %event.order_id, status, "stock already decided for this order");
            return Ok(());
        }
        // One quantity per sku, in sku order (the lock order).
        let mut wanted: BTreeMap<String, i64> = BTreeMap::new();
        for line in &placed.items {
            *wanted.entry(line.sku.clone()).or_default() += line.qty;
        }
        let mut short = Vec::new();
        for (sku, qty) in &wanted {
            let available: Option<i64> =
                sqlx::query("SELECT available FROM stock WHERE sku = $1 FOR UPDATE")
                    .bind(sku)
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|row| row.try_get("available"))
                    .transpose()?;
            if available.unwrap_or(0) < *qty {
                short.push(sku.clone());
            }
        }
        let lines: Vec<Line> = wanted
            .iter()
            .map(|(sku, qty)| Line {
                sku: sku.clone(),
                qty: *qty,
            })
            .collect();
        if !short.is_empty() {
            record(tx, event, "rejected", &lines).await?;
            tracing::info!(order_id = %event.order_id, ?short, "out of stock");
            let announced =
                event.caused(event::OUT_OF_STOCK, to_json(&OutOfStock { skus: short })?);
            return enqueue(tx, &self.topics.inventory, &announced).await;
        }
        for line in &lines {
            sqlx::query("UPDATE stock SET available = available - $1 WHERE sku = $2")
                .bind(line.qty)
                .bind(&line.sku)
                .execute(&mut **tx)
                .await?;
        }
        record(tx, event, "reserved", &lines).await?;
        let announced = event.caused(event::STOCK_RESERVED, serde_json::json!({}));
        enqueue(tx, &self.topics.inventory, &announced).await
    }

    /// Saga compensation: the order was cancelled, the food goes back on the shelf.
    async fn release(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &Envelope,
    ) -> Result<(), HandleError> {
        match reservation(tx, event).await? {
            Some((status, lines)) if status == "reserved" => {
                for line in &lines {
                    sqlx::query("UPDATE stock SET available = available + $1 WHERE sku = $2")
                        .bind(line.qty)
                        .bind(&line.sku)
                        .execute(&mut **tx)
                        .await?;
                }
                sqlx::query(
                    "UPDATE reservations SET status = 'released', updated_at = $1 WHERE order_id = $2",
                )
                .bind(common::db::timestamp(common::db::now()))
                .bind(event.order_id.to_string())
                .execute(&mut **tx)
                .await
                ?;
                tracing::info!(order_id = %event.order_id, "stock released");
                let announced = event.caused(event::STOCK_RELEASED, serde_json::json!({}));
                enqueue(tx, &self.topics.inventory, &announced).await
            }
            Some(_) => Ok(()), // rejected, released or voided: nothing held
            None => record(tx, event, "voided", &[]).await,
        }
    }
}

async fn reservation(
    tx: &mut Transaction<'static, Any>,
    event: &Envelope,
) -> Result<Option<(String, Vec<Line>)>, HandleError> {
    let Some(row) =
        sqlx::query("SELECT status, lines FROM reservations WHERE order_id = $1 FOR UPDATE")
            .bind(event.order_id.to_string())
            .fetch_optional(&mut **tx)
            .await?
    else {
        return Ok(None);
    };
    let status: String = row.try_get("status")?;
    let lines: String = row.try_get("lines")?;
    let lines = serde_json::from_str(&lines).map_err(HandleError::transient)?;
    Ok(Some((status, lines)))
}

async fn record(
    tx: &mut Transaction<'static, Any>,
    event: &Envelope,
    status: &str,
    lines: &[Line],
) -> Result<(), HandleError> {
    sqlx::query(
        "INSERT INTO reservations (order_id, status, lines, updated_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(event.order_id.to_string())
    .bind(status)
    .bind(serde_json::to_string(lines).map_err(HandleError::transient)?)
    .bind(common::db::timestamp(common::db::now()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The inventory service: one consumer of `orders` over the inventory database.
pub type InventoryService = ConsumerService<Inventory>;

impl InventoryService {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        ConsumerService::open(
            settings,
            SERVICE,
            &settings.inventory_database_url,
            migrators(),
            Inventory::new,
        )
        .await
    }
}
