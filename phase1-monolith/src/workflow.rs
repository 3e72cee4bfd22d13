//! Settling a payment outcome onto an order — shared by the request handler and the
//! reconciler, so both apply exactly the same rules.

use crate::store::{ApplyError, OrderStore};
use common::domain::{Order, OrderEvent, OrderStatus};
use common::payment::PaymentOutcome;

/// Moves `order` according to `outcome`. `Unknown` leaves it `placed` (in doubt).
/// If someone else settled the order first, their result is returned.
pub async fn settle(
    store: &OrderStore,
    order: Order,
    outcome: &PaymentOutcome,
) -> anyhow::Result<Order> {
    let (event, payment_id) = match outcome {
        PaymentOutcome::Captured { charge_id } => {
            (OrderEvent::PaymentSucceeded, Some(charge_id.as_str()))
        }
        PaymentOutcome::Declined { charge_id, .. } => {
            (OrderEvent::PaymentFailed, charge_id.as_deref())
        }
        PaymentOutcome::Unknown { .. } => return Ok(order),
    };
    match store.apply(&order, event, payment_id).await {
        Ok(settled) => {
            tracing::info!(order_id = %settled.id, status = %settled.status, "order settled");
            Ok(settled)
        }
        Err(ApplyError::Stale(current)) => {
            tracing::info!(order_id = %current.id, status = %current.status, "order was settled concurrently");
            Ok(*current)
        }
        Err(ApplyError::Illegal(illegal)) if order.status != OrderStatus::Placed => {
            // Already settled: the newer truth wins, and the anomaly is visible in the log.
            tracing::warn!(order_id = %order.id, %illegal, "ignoring payment outcome for a settled order");
            Ok(order)
        }
        Err(err) => Err(anyhow::Error::new(err)),
    }
}
