//! The books: what clients were told against what the databases, the provider's
//! ledger, Redis and the topics hold. The system is eventually consistent
//! (compensations and notifications trail the order's final state), so a checker
//! looks again, up to a limit, until every rule holds, then reports the rules still
//! broken.
//!
//! 1. Every accepted order reached a final state (`delivered` or `cancelled`).
//! 2. At most one captured charge per order; a delivered order has exactly one, for
//!    its total, not refunded, and it is the order's `payment_id`; a cancelled order
//!    has none that was not refunded; no charge for an order that does not exist.
//! 3. Stock agrees with the orders: reservations held = delivered orders, and for
//!    every sku, initial − available = the quantities those reservations hold (so
//!    nothing is oversold and nothing released twice).
//! 4. Every notification was sent at most once (no event id twice in Redis' list).
//! 5. Every outbox is drained.
//!
//! The rules are checked against the system's own stores — never against what a test
//! thinks happened — so a lost event, a double charge or a stuck outbox fails
//! whatever caused it. Phase 2's tests run it on a system in the test's process
//! (`testing::checker`); phase 4's chaos scenarios on processes they killed.

use crate::config::Settings;
use common::domain::OrderId;
use common::payment::Ledger;
use redis::AsyncCommands;
use sqlx::{AnyPool, Row};
use std::collections::{BTreeMap, BTreeSet};

/// Where the books are kept.
#[derive(Debug)]
pub struct Books<'a> {
    /// The databases (the outboxes of each) and Redis.
    pub settings: &'a Settings,
    pub orders_db: &'a AnyPool,
    pub inventory_db: &'a AnyPool,
    /// The provider's ledger, read just before.
    pub ledger: Ledger,
    /// The Redis list of sent notifications, when the notification service runs.
    pub notifications_key: Option<String>,
}

/// What [`inspect`] counted.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub delivered: usize,
    pub cancelled_payment: usize,
    pub cancelled_stock: usize,
    pub refunded: usize,
    pub charges: usize,
    pub notifications: usize,
}

/// One look at the books: every rule still broken (empty when all hold), and what
/// was counted, for the `accepted` orders; `initial_stock` is the stock before them.
pub async fn inspect(
    books: &Books<'_>,
    accepted: &[OrderId],
    initial_stock: &BTreeMap<String, i64>,
) -> anyhow::Result<(Vec<String>, Report)> {
    let mut problems = Vec::new();
    let mut report = Report::default();

    // 1. final states
    let rows =
        sqlx::query("SELECT id, status, cancellation_reason, payment_id, total_cents FROM orders")
            .fetch_all(books.orders_db)
            .await?;
    let mut orders: BTreeMap<String, (String, Option<String>, Option<String>, i64)> =
        BTreeMap::new();
    for row in &rows {
        orders.insert(
            row.get("id"),
            (
                row.get("status"),
                row.get("cancellation_reason"),
                row.get("payment_id"),
                row.get("total_cents"),
            ),
        );
    }
    for id in accepted {
        match orders.get(&id.to_string()) {
            None => problems.push(format!("accepted order {id} is not in the order database")),
            Some((status, ..)) if status != "delivered" && status != "cancelled" => {
                problems.push(format!("order {id} is still {status}"))
            }
            Some((status, reason, ..)) => match (status.as_str(), reason.as_deref()) {
                ("delivered", _) => report.delivered += 1,
                (_, Some("out_of_stock")) => report.cancelled_stock += 1,
                _ => report.cancelled_payment += 1,
            },
        }
    }

    // 2. charges
    let captured = books.ledger.captured_by_order();
    for (order, charges) in &captured {
        report.charges += charges.len();
        report.refunded += charges.iter().filter(|c| c.refunded_at.is_some()).count();
        if charges.len() > 1 {
            problems.push(format!("order {order} was charged {} times", charges.len()));
        }
        match orders.get(*order) {
            None => problems.push(format!("charge for unknown order {order}")),
            Some((status, _, payment_id, total)) => {
                let kept: Vec<_> = charges.iter().filter(|c| c.refunded_at.is_none()).collect();
                if status == "delivered" {
                    if kept.len() != 1 || kept[0].amount_cents != *total {
                        problems.push(format!(
                            "delivered order {order} keeps {} charges",
                            kept.len()
                        ));
                    } else if payment_id.as_deref() != Some(kept[0].charge_id.as_str()) {
                        problems.push(format!("order {order}: payment_id is not its charge"));
                    }
                }
                if status == "cancelled" && !kept.is_empty() {
                    problems.push(format!(
                        "cancelled order {order} keeps a charge (no refund)"
                    ));
                }
            }
        }
    }
    for (id, (status, ..)) in &orders {
        if status == "delivered" && !captured.contains_key(id.as_str()) {
            problems.push(format!("delivered order {id} has no charge"));
        }
    }

    // 3. stock
    let held = held_reservations(books.inventory_db).await?;
    let delivered: BTreeSet<&String> = orders
        .iter()
        .filter(|(_, (s, ..))| s == "delivered")
        .map(|(id, _)| id)
        .collect();
    let holding: BTreeSet<&String> = held.keys().collect();
    if holding != delivered {
        let extra: Vec<_> = holding.difference(&delivered).take(3).collect();
        let missing: Vec<_> = delivered.difference(&holding).take(3).collect();
        problems.push(format!(
            "reservations held ({}) ≠ delivered orders ({}): e.g. held but not delivered {extra:?}, delivered without stock {missing:?}",
            holding.len(),
            delivered.len()
        ));
    }
    let stock = stock(books.inventory_db).await?;
    let mut reserved_qty: BTreeMap<String, i64> = BTreeMap::new();
    for lines in held.values() {
        for (sku, qty) in lines {
            *reserved_qty.entry(sku.clone()).or_default() += qty;
        }
    }
    for (sku, initial) in initial_stock {
        let taken = initial - stock.get(sku).copied().unwrap_or(0);
        let reserved = reserved_qty.get(sku).copied().unwrap_or(0);
        if taken != reserved {
            problems.push(format!(
                "{sku}: {taken} taken from stock but {reserved} held by reservations"
            ));
        }
    }

    // 4. notifications
    let sent = match &books.notifications_key {
        Some(key) => notifications(&books.settings.redis_url, key).await?,
        None => Vec::new(),
    };
    report.notifications = sent.len();
    let mut seen = BTreeSet::new();
    for event_id in sent {
        if !seen.insert(event_id.clone()) {
            problems.push(format!("notification for event {event_id} sent twice"));
        }
    }

    // 5. outboxes
    for (name, url) in books.settings.databases() {
        let pool = common::db::connect(url, 1).await?;
        let backlog = crate::outbox::backlog(&pool).await?;
        pool.close().await;
        if backlog > 0 {
            problems.push(format!(
                "{} outbox still holds {backlog} events",
                name.name()
            ));
        }
    }
    Ok((problems, report))
}

/// The event ids of the notifications sent so far (the list at `key`), in the order
/// they were sent.
pub async fn notifications(redis_url: &str, key: &str) -> anyhow::Result<Vec<String>> {
    let mut redis = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await
        .map_err(|err| {
            anyhow::anyhow!(
                "Redis unreachable at {redis_url} ({err}); start it with `cargo xtask up`"
            )
        })?;
    let sent: Vec<String> = redis.lrange(key, 0, -1).await?;
    sent.iter()
        .map(|text| {
            let value: serde_json::Value = serde_json::from_str(text)?;
            Ok(value["event_id"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

/// The reservations still held, by order: each a list of (sku, quantity).
pub async fn held_reservations(
    db: &AnyPool,
) -> anyhow::Result<BTreeMap<String, Vec<(String, i64)>>> {
    sqlx::query("SELECT order_id, lines FROM reservations WHERE status = 'reserved'")
        .fetch_all(db)
        .await?
        .iter()
        .map(|row| {
            let lines: Vec<crate::flow::Line> =
                serde_json::from_str(&row.get::<String, _>("lines"))?;
            Ok((
                row.get("order_id"),
                lines.into_iter().map(|l| (l.sku, l.qty)).collect(),
            ))
        })
        .collect()
}

/// Each SKU's available stock.
pub async fn stock(db: &AnyPool) -> anyhow::Result<BTreeMap<String, i64>> {
    Ok(sqlx::query("SELECT sku, available FROM stock")
        .fetch_all(db)
        .await?
        .iter()
        .map(|r| (r.get("sku"), r.get("available")))
        .collect())
}
