//! The reconciler: no order stays in doubt.
//!
//! An order is in doubt when it is `placed` and nobody is working on it any more: the
//! payment deadline passed, the breaker was open, or the process died mid-call. Every
//! `interval`, orders that have been `placed` for longer than `settle_after` are
//! settled by asking the provider what happened ("did you charge order X?"):
//!
//! | provider's records          | action                                            |
//! |-----------------------------|---------------------------------------------------|
//! | a captured charge           | `paid` (more than one → logged as a duplicate charge) |
//! | only a declined charge      | `cancelled` (payment failed)                       |
//! | nothing                     | the request never took effect: charge again (with the same idempotency key, unless keys are switched off) |
//!
//! `settle_after` must be longer than the payment deadline, so the reconciler never
//! races a request that is still retrying.

use crate::store::OrderStore;
use crate::workflow;
use chrono::Utc;
use common::domain::{Order, OrderStatus};
use common::payment::{ChargeStatus, PaymentClient, PaymentOutcome};
use common::resilience::BreakerState;
use common::shutdown::CancellationToken;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Reconciler {
    store: OrderStore,
    payment: PaymentClient,
    /// How often to look for in-doubt orders.
    interval: Duration,
    /// How long an order must have been `placed` before it counts as in doubt.
    settle_after: Duration,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub paid: usize,
    pub cancelled: usize,
    pub still_in_doubt: usize,
}

impl Reconciler {
    pub fn new(
        store: OrderStore,
        payment: PaymentClient,
        interval: Duration,
        settle_after: Duration,
    ) -> Self {
        Reconciler {
            store,
            payment,
            interval,
            settle_after,
        }
    }

    /// Runs passes until `shutdown` is cancelled. The first pass runs at once: after a
    /// crash, that is the one that settles what the crash left in doubt.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let pass = tokio::select! {
                () = shutdown.cancelled() => break,
                pass = self.pass() => pass,
            };
            match pass {
                Ok(pass) if pass != Pass::default() => tracing::info!(?pass, "reconciliation pass"),
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = format!("{err:#}"), "reconciliation pass failed")
                }
            }
        }
        tracing::info!("reconciler stopped");
    }

    /// One pass over the in-doubt orders.
    pub async fn pass(&self) -> anyhow::Result<Pass> {
        let cutoff = Utc::now() - self.settle_after;
        let mut pass = Pass::default();
        for order in self.store.in_doubt(cutoff, 100).await? {
            if self.payment.breaker().state() == BreakerState::Open {
                pass.still_in_doubt += 1;
                continue;
            }
            let span = tracing::info_span!("reconcile", order_id = %order.id);
            let settled = tracing::Instrument::instrument(self.settle(order), span).await?;
            match settled.status {
                OrderStatus::Paid => pass.paid += 1,
                OrderStatus::Cancelled => pass.cancelled += 1,
                _ => pass.still_in_doubt += 1,
            }
        }
        Ok(pass)
    }

    async fn settle(&self, order: Order) -> anyhow::Result<Order> {
        // One id for everything the reconciler does about this order, so its lines and
        // the provider's can be found together.
        let request_id = format!("reconcile-{}", order.id);
        let charges = match self.payment.lookup(order.id, &request_id).await {
            Ok(charges) => charges,
            Err(err) => {
                tracing::warn!(error = %err, "cannot ask the provider yet; order stays in doubt");
                return Ok(order);
            }
        };
        let captured: Vec<_> = charges
            .iter()
            .filter(|c| c.status == ChargeStatus::Captured)
            .collect();
        if captured.len() > 1 {
            tracing::error!(
                charges = captured.len(),
                "customer was charged more than once for one order; refund the extra charges"
            );
        }
        let outcome = if let Some(charge) = captured.first() {
            PaymentOutcome::Captured {
                charge_id: charge.charge_id.clone(),
            }
        } else if let Some(declined) = charges.first() {
            PaymentOutcome::Declined {
                charge_id: Some(declined.charge_id.clone()),
                reason: "card declined".into(),
            }
        } else {
            tracing::info!("provider has no charge for this order; charging again");
            self.payment
                .charge(order.id, order.total_cents, &request_id)
                .await
        };
        workflow::settle(&self.store, order, &outcome).await
    }
}
