//! The payment service: charges on `OrderPlaced`, refunds on `OrderCancelled`.
//!
//! It calls the provider simulator through the resilient client phase 1 uses, both
//! in `common::payment` (timeouts, retries with full jitter, circuit breaker, the
//! order id as idempotency key). What it decided is recorded in its own `payments`
//! table and announced through its own outbox, in the consumer's transaction:
//!
//! | event            | payments row        | action                        | announces          |
//! |------------------|---------------------|-------------------------------|--------------------|
//! | `OrderPlaced`    | none                | charge                        | `PaymentCompleted` / `PaymentFailed` |
//! | `OrderPlaced`    | any (e.g. `voided`) | nothing: decided before       | —                  |
//! | `OrderCancelled` | `captured`          | refund (compensation)         | `PaymentRefunded`  |
//! | `OrderCancelled` | none                | ask the provider; refund what it captured, else `voided` | (`PaymentRefunded`) |
//!
//! An unknown charge outcome (deadline passed, breaker open) is a *transient* error:
//! the event goes through the retry topic and the charge is retried with the same
//! idempotency key, so the provider answers from its records instead of charging
//! again. A cancellation can overtake that retry (it is on another topic); it then
//! finds no row, settles with the provider, and leaves `voided`, which the retried
//! `OrderPlaced` respects.
//!
//! **Why the charge happens inside the transaction here, when phase 1 committed the
//! order before calling the provider.** Phase 1 had no redelivery: a crash during the
//! call would have lost every trace of the attempt, so the order was stored first and
//! the reconciler settled what was left in doubt. Here the event itself is the record
//! of the attempt. If the process dies during the call, the transaction (the
//! `processed_events` row, the `payments` row, the outbox row) rolls back, Kafka
//! redelivers `OrderPlaced`, and the charge is retried with the same idempotency key:
//! the provider answers from its records instead of charging again. Nothing is in
//! doubt, so there is nothing to reconcile. The price is a database transaction (a
//! pooled connection and the order's lock) held open for as long as the provider
//! takes: with a slow provider, that is what limits how many orders a payment
//! service settles at once.

use super::{ConsumerService, enqueue, to_json};
use crate::config::Settings;
use crate::consumer::{HandleError, Handler};
use crate::events::Envelope;
use crate::flow::{
    OrderPlaced, PaymentCompleted, PaymentFailed, PaymentRefunded, Service, Topics, event,
};
use common::domain::Cents;
use common::payment::{PaymentClient, PaymentOutcome, RefundOutcome};
use sqlx::{Any, Row, Transaction};
use std::sync::Arc;

pub const SERVICE: Service = Service::Payment;

pub fn migrators() -> Vec<sqlx::migrate::Migrator> {
    vec![sqlx::migrate!("./migrations/payment")]
}

#[derive(Debug, Clone)]
pub struct Payments {
    client: PaymentClient,
    topics: Arc<Topics>,
}

impl Handler for Payments {
    /// One event per transaction: a charge waits for the provider (2–5 s by default)
    /// inside it, and a batch would make every order in it wait for the slowest.
    /// Charges of different orders run side by side instead.
    const BATCH: usize = 1;

    fn wants(&self, event_type: &str) -> bool {
        matches!(event_type, event::ORDER_PLACED | event::ORDER_CANCELLED)
    }

    async fn handle(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &Envelope,
    ) -> Result<(), HandleError> {
        match event.event_type.as_str() {
            event::ORDER_PLACED => self.charge(tx, event).await,
            event::ORDER_CANCELLED => self.compensate(tx, event).await,
            _ => Ok(()),
        }
    }
}

impl Payments {
    async fn charge(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &Envelope,
    ) -> Result<(), HandleError> {
        let placed: OrderPlaced = event.decode()?;
        if let Some(status) = status_of(tx, event).await? {
            tracing::info!(order_id = %event.order_id, status, "payment already decided; not charging");
            return Ok(());
        }
        let amount = Cents::new(placed.total_cents)
            .map_err(|e| HandleError::Permanent(format!("bad amount: {e}")))?;
        let (status, charge_id, announced) = match self
            .client
            .charge(event.order_id, amount, &event.correlation_id)
            .await
        {
            PaymentOutcome::Captured { charge_id } => {
                let paid = PaymentCompleted {
                    charge_id: charge_id.clone(),
                    amount_cents: amount.get(),
                };
                (
                    "captured",
                    Some(charge_id),
                    event.caused(event::PAYMENT_COMPLETED, to_json(&paid)?),
                )
            }
            PaymentOutcome::Declined { charge_id, reason } => (
                "declined",
                charge_id,
                event.caused(event::PAYMENT_FAILED, to_json(&PaymentFailed { reason })?),
            ),
            PaymentOutcome::Unknown { reason } => {
                return Err(HandleError::Transient(anyhow::anyhow!(
                    "payment outcome unknown: {reason}"
                )));
            }
        };
        record(tx, event, status, charge_id.as_deref(), amount.get()).await?;
        enqueue(tx, &self.topics.payments, &announced).await
    }

    /// Saga compensation: give back what was taken.
    async fn compensate(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &Envelope,
    ) -> Result<(), HandleError> {
        let status = status_of(tx, event).await?;
        match status.as_deref() {
            Some("captured") | None => {}
            Some(_) => return Ok(()), // declined, refunded or voided: nothing to give back
        }
        let refunded = match self
            .client
            .refund(event.order_id, &event.correlation_id)
            .await
        {
            Ok(RefundOutcome::Refunded(charges)) => charges,
            Ok(RefundOutcome::NothingCaptured) => Vec::new(),
            Err(err) => return Err(HandleError::transient(err)),
        };
        let charge_ids: Vec<String> = refunded.iter().map(|c| c.charge_id.clone()).collect();
        let amount: i64 = refunded.iter().map(|c| c.amount_cents).sum();
        let new_status = if charge_ids.is_empty() {
            "voided"
        } else {
            "refunded"
        };
        if status.is_none() {
            record(
                tx,
                event,
                new_status,
                charge_ids.first().map(String::as_str),
                amount,
            )
            .await?;
        } else {
            sqlx::query("UPDATE payments SET status = $1, updated_at = $2 WHERE order_id = $3")
                .bind(new_status)
                .bind(common::db::timestamp(common::db::now()))
                .bind(event.order_id.to_string())
                .execute(&mut **tx)
                .await?;
        }
        tracing::info!(order_id = %event.order_id, status = new_status, refunds = charge_ids.len(), "payment compensated");
        if charge_ids.is_empty() {
            return Ok(());
        }
        let announced = event.caused(
            event::PAYMENT_REFUNDED,
            to_json(&PaymentRefunded { charge_ids })?,
        );
        enqueue(tx, &self.topics.payments, &announced).await
    }
}

async fn status_of(
    tx: &mut Transaction<'static, Any>,
    event: &Envelope,
) -> Result<Option<String>, HandleError> {
    let row = sqlx::query("SELECT status FROM payments WHERE order_id = $1 FOR UPDATE")
        .bind(event.order_id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map(|r| r.try_get::<String, _>("status")).transpose()?)
}

async fn record(
    tx: &mut Transaction<'static, Any>,
    event: &Envelope,
    status: &str,
    charge_id: Option<&str>,
    amount_cents: i64,
) -> Result<(), HandleError> {
    sqlx::query(
        "INSERT INTO payments (order_id, status, charge_id, amount_cents, updated_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(event.order_id.to_string())
    .bind(status)
    .bind(charge_id)
    .bind(amount_cents)
    .bind(common::db::timestamp(common::db::now()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The payment service: one consumer of `orders` over the payment database.
pub type PaymentService = ConsumerService<Payments>;

impl PaymentService {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let client = PaymentClient::new(&settings.payment_url(), settings.payment.clone());
        ConsumerService::open(
            settings,
            SERVICE,
            &settings.payment_database_url,
            migrators(),
            |topics| Payments { client, topics },
        )
        .await
    }
}
