//! The reconciliation checker of phase 2's tests: [`crate::books`] on a system in the
//! test's process, waiting up to a limit for every rule to hold. `tests/checker.rs`
//! breaks each rule on purpose and shows the checker catching it.

use super::system::TestSystem;
pub use crate::books::Report;
use crate::books::{self, Books};
use common::domain::OrderId;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Waits until every rule holds for `accepted` orders; panics with what is still
/// wrong after `limit`. `initial_stock` is the stock before the orders.
pub async fn check(
    system: &TestSystem,
    accepted: &[OrderId],
    initial_stock: &BTreeMap<String, i64>,
    limit: Duration,
) -> Report {
    let started = Instant::now();
    loop {
        let (problems, report) = inspect(system, accepted, initial_stock).await;
        if problems.is_empty() {
            eprintln!(
                "checker: {} orders: {} delivered, {} cancelled (payment), {} cancelled (stock), \
                 {} charges, {} refunded, {} notifications — all consistent after {:.1} s",
                accepted.len(),
                report.delivered,
                report.cancelled_payment,
                report.cancelled_stock,
                report.charges,
                report.refunded,
                report.notifications,
                started.elapsed().as_secs_f64()
            );
            return report;
        }
        if started.elapsed() > limit {
            panic!(
                "after {limit:?} the books still disagree:\n  {}",
                problems.join("\n  ")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One look at the books: every rule still broken (empty when all hold), and what
/// was counted. [`check`] repeats this until the problems are gone.
/// One look at the books: every rule still broken (empty when all hold), and what
/// was counted. [`check`] repeats this until the problems are gone.
pub async fn inspect(
    system: &TestSystem,
    accepted: &[OrderId],
    initial_stock: &BTreeMap<String, i64>,
) -> (Vec<String>, Report) {
    let books = Books {
        settings: &system.settings,
        orders_db: &system.orders_db,
        inventory_db: &system.inventory_db,
        ledger: system.simulator.ledger(),
        notifications_key: notifications_key(system),
    };
    books::inspect(&books, accepted, initial_stock)
        .await
        .expect("the books can be read")
}

/// The event ids of the notifications sent so far, in the order they were sent.
pub async fn notifications(system: &TestSystem) -> Vec<String> {
    let Some(key) = notifications_key(system) else {
        return Vec::new();
    };
    books::notifications(&system.settings.redis_url, &key)
        .await
        .expect("Redis reachable (`cargo xtask up`)")
}

fn notifications_key(system: &TestSystem) -> Option<String> {
    system.notification_addr?;
    Some(crate::services::notification::Keys::new(&system.topics).sent())
}

/// The reservations still held, by order: each a list of (sku, quantity).
pub async fn held_reservations(db: &sqlx::AnyPool) -> BTreeMap<String, Vec<(String, i64)>> {
    books::held_reservations(db).await.unwrap()
}
