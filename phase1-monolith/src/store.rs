//! Persistence of orders: inline, portable SQL on an `AnyPool`.
//!
//! Two rules carry the phase-1 lessons:
//! * [`OrderStore::insert`] commits the order (status `placed`) **before** anyone
//!   calls the payment provider. If the process dies during the payment call, this
//!   row is what tells the reconciler that a charge may be in flight.
//! * [`OrderStore::apply`] changes status with optimistic concurrency
//!   (`WHERE version = $n`). The request handler and the reconciler may race to
//!   settle the same order; exactly one wins, the other re-reads.

use crate::idempotency;
use anyhow::Context;
use chrono::Utc;
use common::db::{parse_timestamp, timestamp};
use common::domain::{
    CancellationReason, Cents, CustomerId, IllegalTransition, MenuItem, NewOrder, Order,
    OrderEvent, OrderId, OrderLine, OrderStatus, Quantity, Sku,
};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AnyPool, Row, Transaction};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct OrderStore {
    pool: AnyPool,
}

/// Result of inserting an order under an idempotency key.
#[derive(Debug)]
pub enum Inserted {
    Created(Order),
    /// Another request already claimed this idempotency key; nothing was written.
    KeyAlreadyUsed,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// Someone else changed the order first; here is what it is now.
    #[error("order {} changed concurrently (now {})", .0.id, .0.status)]
    Stale(Box<Order>),
    #[error(transparent)]
    Db(#[from] anyhow::Error),
}

const ORDER_COLUMNS: &str = "id, customer_id, status, cancellation_reason, total_cents, \
     idempotency_key, payment_id, version, created_at, updated_at";

impl OrderStore {
    pub fn new(pool: AnyPool) -> Self {
        OrderStore { pool }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Cheap liveness check of the database, for `/ready`.
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn menu(&self) -> anyhow::Result<HashMap<Sku, MenuItem>> {
        let rows = sqlx::query("SELECT sku, name, price_cents FROM menu_items")
            .fetch_all(&self.pool)
            .await
            .context("reading the menu")?;
        rows.iter()
            .map(|row| {
                let item = MenuItem {
                    sku: Sku::parse(row.try_get("sku")?)?,
                    name: row.try_get("name")?,
                    price_cents: Cents::new(row.try_get("price_cents")?)?,
                };
                Ok((item.sku.clone(), item))
            })
            .collect()
    }

    /// Stores a new order in status `placed`, atomically with its lines and (if given)
    /// its idempotency key `(key, request fingerprint)`.
    pub async fn insert(
        &self,
        new: &NewOrder,
        key: Option<(&str, &str)>,
    ) -> anyhow::Result<Inserted> {
        let mut tx = self.pool.begin().await?;
        let inserted = Self::insert_in(&mut tx, new, key).await?;
        match inserted {
            Inserted::Created(_) => tx.commit().await.context("committing new order")?,
            Inserted::KeyAlreadyUsed => tx.rollback().await?,
        }
        Ok(inserted)
    }

    /// [`insert`](Self::insert) inside the caller's transaction, so that more can be
    /// written atomically with the order (phase 2 adds its `OrderPlaced` event to the
    /// outbox). On `KeyAlreadyUsed` nothing was written; the caller rolls back.
    pub async fn insert_in(
        tx: &mut Transaction<'_, Any>,
        new: &NewOrder,
        key: Option<(&str, &str)>,
    ) -> anyhow::Result<Inserted> {
        let now = timestamp(common::db::now());
        // The key is claimed first: the transaction's first statement is a write, so
        // SQLite takes its write lock at once and concurrent writers queue up on the
        // busy timeout instead of failing a lock upgrade.
        if let Some((key, fingerprint)) = key
            && !idempotency::claim(tx, key, fingerprint, new.id, &now).await?
        {
            return Ok(Inserted::KeyAlreadyUsed);
        }
        sqlx::query(
            "INSERT INTO orders (id, customer_id, status, cancellation_reason, total_cents, \
             idempotency_key, payment_id, version, created_at, updated_at) \
             VALUES ($1, $2, $3, NULL, $4, $5, NULL, 1, $6, $6)",
        )
        .bind(new.id.to_string())
        .bind(new.customer_id.as_str())
        .bind(OrderStatus::Placed.as_str())
        .bind(new.total_cents.get())
        .bind(key.map(|(k, _)| k))
        .bind(&now)
        .execute(&mut **tx)
        .await
        .context("inserting order")?;
        for (line_no, line) in new.lines.iter().enumerate() {
            sqlx::query(
                "INSERT INTO order_items (order_id, line_no, sku, name, qty, unit_price_cents) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(new.id.to_string())
            .bind(line_no as i64)
            .bind(line.sku.as_str())
            .bind(&line.name)
            .bind(i64::from(line.qty.get()))
            .bind(line.unit_price_cents.get())
            .execute(&mut **tx)
            .await
            .context("inserting order line")?;
        }
        let created_at = parse_timestamp(&now)?;
        Ok(Inserted::Created(Order {
            id: new.id,
            customer_id: new.customer_id.clone(),
            status: OrderStatus::Placed,
            cancellation_reason: None,
            items: new.lines.clone(),
            total_cents: new.total_cents,
            idempotency_key: key.map(|(k, _)| k.to_owned()),
            payment_id: None,
            version: 1,
            created_at,
            updated_at: created_at,
        }))
    }

    pub async fn get(&self, id: OrderId) -> anyhow::Result<Option<Order>> {
        let mut conn = self.pool.acquire().await?;
        Self::get_in(&mut conn, id).await
    }

    /// [`get`](Self::get) on the caller's connection or transaction.
    pub async fn get_in(conn: &mut AnyConnection, id: OrderId) -> anyhow::Result<Option<Order>> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await
            .context("reading order")?;
        match row {
            Some(row) => Ok(Some(with_items(conn, order_from_row(&row)?).await?)),
            None => Ok(None),
        }
    }

    /// Orders still `placed` whose last change is older than `older_than`: the ones
    /// whose payment outcome is in doubt. Oldest first.
    pub async fn in_doubt(
        &self,
        older_than: chrono::DateTime<Utc>,
        limit: i64,
    ) -> anyhow::Result<Vec<Order>> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE status = $1 AND updated_at < $2 \
             ORDER BY updated_at LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(OrderStatus::Placed.as_str())
            .bind(timestamp(older_than))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .context("listing in-doubt orders")?;
        let mut conn = self.pool.acquire().await?;
        let mut orders = Vec::with_capacity(rows.len());
        for row in &rows {
            orders.push(with_items(&mut conn, order_from_row(row)?).await?);
        }
        Ok(orders)
    }

    /// Applies `event` to `order` through the state machine and stores the result,
    /// provided nobody changed the order since it was read.
    pub async fn apply(
        &self,
        order: &Order,
        event: OrderEvent,
        payment_id: Option<&str>,
    ) -> Result<Order, ApplyError> {
        let mut conn = self.pool.acquire().await.map_err(anyhow::Error::from)?;
        Self::apply_in(&mut conn, order, event, payment_id).await
    }

    /// [`apply`](Self::apply) on the caller's connection or transaction (phase 2 writes
    /// the status change and the event announcing it in one transaction).
    pub async fn apply_in(
        conn: &mut AnyConnection,
        order: &Order,
        event: OrderEvent,
        payment_id: Option<&str>,
    ) -> Result<Order, ApplyError> {
        let next = order.status.apply(event)?;
        let reason = (next == OrderStatus::Cancelled).then_some(match event {
            OrderEvent::OutOfStock => CancellationReason::OutOfStock,
            _ => CancellationReason::PaymentFailed,
        });
        let payment_id = payment_id
            .map(str::to_owned)
            .or_else(|| order.payment_id.clone());
        let now = common::db::now();
        let updated = sqlx::query(
            "UPDATE orders SET status = $1, cancellation_reason = $2, payment_id = $3, \
             version = version + 1, updated_at = $4 WHERE id = $5 AND version = $6",
        )
        .bind(next.as_str())
        .bind(reason.map(CancellationReason::as_str))
        .bind(payment_id.as_deref())
        .bind(timestamp(now))
        .bind(order.id.to_string())
        .bind(order.version)
        .execute(&mut *conn)
        .await
        .context("updating order status")?;
        if updated.rows_affected() == 0 {
            let current = Self::get_in(conn, order.id)
                .await?
                .with_context(|| format!("order {} vanished", order.id))?;
            return Err(ApplyError::Stale(Box::new(current)));
        }
        Ok(Order {
            status: next,
            cancellation_reason: reason,
            payment_id,
            version: order.version + 1,
            updated_at: now,
            ..order.clone()
        })
    }
}

async fn with_items(conn: &mut AnyConnection, mut order: Order) -> anyhow::Result<Order> {
    let rows = sqlx::query(
        "SELECT sku, name, qty, unit_price_cents FROM order_items WHERE order_id = $1 ORDER BY line_no",
    )
    .bind(order.id.to_string())
    .fetch_all(&mut *conn)
    .await
    .context("reading order lines")?;
    order.items = rows
        .iter()
        .map(|row| -> anyhow::Result<OrderLine> {
            let qty = Quantity::new(row.try_get("qty")?)?;
            let unit = Cents::new(row.try_get("unit_price_cents")?)?;
            Ok(OrderLine {
                sku: Sku::parse(row.try_get("sku")?)?,
                name: row.try_get("name")?,
                qty,
                unit_price_cents: unit,
                line_total_cents: unit.checked_mul(qty)?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(order)
}

fn order_from_row(row: &AnyRow) -> anyhow::Result<Order> {
    let text = |col: &str| -> anyhow::Result<String> { Ok(row.try_get::<String, _>(col)?) };
    let optional = |col: &str| -> anyhow::Result<Option<String>> {
        Ok(row.try_get::<Option<String>, _>(col)?)
    };
    Ok(Order {
        id: text("id")?.parse()?,
        customer_id: CustomerId::parse(&text("customer_id")?)?,
        status: text("status")?.parse().map_err(anyhow::Error::msg)?,
        cancellation_reason: optional("cancellation_reason")?
            .map(|r| r.parse().map_err(anyhow::Error::msg))
            .transpose()?,
        items: Vec::new(),
        total_cents: Cents::new(row.try_get("total_cents")?)?,
        idempotency_key: optional("idempotency_key")?,
        payment_id: optional("payment_id")?,
        version: row.try_get("version")?,
        created_at: parse_timestamp(&text("created_at")?)?,
        updated_at: parse_timestamp(&text("updated_at")?)?,
    })
}
