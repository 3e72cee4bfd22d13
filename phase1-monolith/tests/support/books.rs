//! The checker: do our books agree with the payment provider's?
//!
//! After any scenario, whatever went wrong on the way, these must hold:
//! 1. no order is left `placed` (every accepted order reached a final state);
//! 2. a `paid` order has exactly one captured charge, for its total, and its
//!    `payment_id` is that charge;
//! 3. a `cancelled` order has no captured charge;
//! 4. every captured charge belongs to an order we stored (we never charge for an
//!    order we could forget: the order is persisted before the payment call);
//! 5. whatever a client was told finally (201) is still true.

use common::payment::Ledger;
use sqlx::{AnyPool, Row};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOrder {
    pub id: String,
    pub status: String,
    pub payment_id: Option<String>,
    pub total_cents: i64,
}

pub async fn stored_orders(db: &AnyPool) -> Vec<StoredOrder> {
    sqlx::query("SELECT id, status, payment_id, total_cents FROM orders ORDER BY id")
        .fetch_all(db)
        .await
        .unwrap()
        .iter()
        .map(|row| StoredOrder {
            id: row.get("id"),
            status: row.get("status"),
            payment_id: row.get("payment_id"),
            total_cents: row.get("total_cents"),
        })
        .collect()
}

pub async fn wait_until_settled(db: &AnyPool, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let placed = super::count(
            db,
            "SELECT COUNT(*) AS n FROM orders WHERE status = 'placed'",
        )
        .await;
        if placed == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{placed} orders still in doubt after {limit:?}: the reconciler did not settle them"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the client was told about an order with a final answer (HTTP 201).
#[derive(Debug, Clone)]
pub struct Told {
    pub order_id: String,
    pub status: String,
}

/// Asserts rules 1–5 and returns (paid, cancelled) counts.
pub fn assert_books_balance(
    orders: &[StoredOrder],
    ledger: &Ledger,
    told: &[Told],
) -> (usize, usize) {
    let captured = ledger.captured_by_order();
    let by_id: BTreeMap<&str, &StoredOrder> = orders.iter().map(|o| (o.id.as_str(), o)).collect();
    let (mut paid, mut cancelled) = (0, 0);
    for order in orders {
        let charges = captured
            .get(order.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        match order.status.as_str() {
            "paid" => {
                paid += 1;
                assert_eq!(
                    charges.len(),
                    1,
                    "paid order {} has {} captured charges",
                    order.id,
                    charges.len()
                );
                assert_eq!(
                    order.payment_id.as_deref(),
                    Some(charges[0].charge_id.as_str()),
                    "order {}",
                    order.id
                );
                assert_eq!(
                    charges[0].amount_cents, order.total_cents,
                    "order {} charged a wrong amount",
                    order.id
                );
            }
            "cancelled" => {
                cancelled += 1;
                assert!(
                    charges.is_empty(),
                    "cancelled order {} was charged {} times",
                    order.id,
                    charges.len()
                );
            }
            other => panic!(
                "order {} is still {other}: not every order reached a final state",
                order.id
            ),
        }
    }
    for order_id in captured.keys() {
        assert!(
            by_id.contains_key(order_id),
            "the provider charged order {order_id}, which we never stored"
        );
    }
    for told in told {
        let stored = by_id.get(told.order_id.as_str()).unwrap_or_else(|| {
            panic!(
                "client was told about {} but it is not stored",
                told.order_id
            )
        });
        assert_eq!(
            stored.status, told.status,
            "client was told {} is {}",
            told.order_id, told.status
        );
    }
    (paid, cancelled)
}
