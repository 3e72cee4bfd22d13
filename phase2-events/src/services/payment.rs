//! The payment service: charges on `OrderPlaced`, refunds on `OrderCancelled`.
//!
//! It calls the provider simulator through the resilient client phase 1 uses, both
//! in `common::payment` (timeouts, retries with full jitter, circuit breaker, the
//! order id as idempotency key). It does so in two parts, which never hold a
//! database transaction open while the provider thinks (2–5 s by default):
//!
//! 1. **The consumer writes down what is to be done** ([`Payments`], batched like
//!    every database-only handler): `OrderPlaced` adds a `pending` row to the
//!    `payments` table, `OrderCancelled` marks the row `cancel`. Nothing else, so a
//!    batch of a hundred events is one short transaction.
//! 2. **The worker does it** ([`Worker`]): it claims due rows (a lease, not a lock),
//!    calls the provider for each — hundreds side by side, each waiting for its answer
//!    with no connection held — and writes what the provider answered, together with
//!    the event announcing it, in one transaction per handful of answers.
//!
//! | row                  | `cancel` | the worker                               | announces          |
//! |----------------------|----------|------------------------------------------|--------------------|
//! | `pending`            | no       | charges                                  | `PaymentCompleted` / `PaymentFailed` |
//! | `pending`, never tried | yes    | nothing to give back: `voided`           | —                  |
//! | `pending`, tried     | yes      | refunds whatever the provider captured   | (`PaymentRefunded`) |
//! | `captured`           | yes      | refunds (compensation)                   | `PaymentRefunded`  |
//! | `declined`, `refunded`, `voided` | — | nothing: decided                   | —                  |
//!
//! **Why this is safe.** It is phase 1's rule — write the intent down before calling
//! the provider — with Kafka's redelivery and the row's states instead of a
//! reconciler:
//!
//! * A charge whose outcome is unknown (deadline passed, breaker open) stays
//!   `pending` and is tried again later, with backoff, with the *same* idempotency
//!   key: the provider answers from its records instead of charging twice. It is
//!   tried until the provider answers, however long that takes — the order waits,
//!   and recovers without a human when the provider does.
//! * A worker that dies during a call leaves a lease that runs out; another worker
//!   (or the restarted one) calls again, with the same key.
//! * A cancellation never races a charge in flight: it only marks the row, and
//!   money is given back by the worker, after the charge's answer is written. An order
//!   cancelled before the worker ever called the provider is `voided` without a call.
//! * Every answer is written `WHERE status = 'pending'` (or the state it came from),
//!   so an answer written twice — two workers after a lease ran out — is written once,
//!   and announced once.
//!
//! Phase 2 used to charge *inside* the consumer's transaction: simple, but each
//! charge held a pooled connection and the order's lock for 2–5 s, and a payment
//! service settled at most as many orders at once as it had connections — about
//! three a second. The worker settles as many as the provider answers.

use super::{ConsumerService, enqueue, to_json};
use crate::config::Settings;
use crate::consumer::{HandleError, Handler};
use crate::events::Envelope;
use crate::flow::{
    OrderPlaced, PaymentCompleted, PaymentFailed, PaymentRefunded, Service, Topics, event,
};
use anyhow::Context;
use common::domain::{Cents, OrderId};
use common::payment::{PaymentClient, PaymentOutcome, RefundOutcome};
use common::resilience::backoff::FullJitterBackoff;
use common::shutdown::CancellationToken;
use sqlx::postgres::PgListener;
use sqlx::{Any, AnyPool, Row, Transaction};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tracing::Instrument;

pub const SERVICE: Service = Service::Payment;

pub fn migrators() -> Vec<sqlx::migrate::Migrator> {
    vec![common::embed_migrations!(
        "migrations/payment",
        ["000001_payments.sql", "000002_payment_worker.sql"]
    )]
}

/// Provider calls one worker has in flight at most. Each is a future waiting for an
/// HTTP answer, not a thread or a connection: with answers taking 2–5 s, 512 at once
/// settle over a hundred orders a second.
pub const MAX_CALLS: usize = 512;

/// How often an idle worker looks for due rows it was not told about (a retry whose
/// backoff ran out, a lease that expired); new work wakes it at once (`NOTIFY`).
const POLL: Duration = Duration::from_millis(500);

/// The Postgres channel the `payments` table notifies when work becomes due.
const DUE_CHANNEL: &str = "payments_due";

/// When to try again after the provider's answer was unknown: full jitter, from 1 s
/// up to 30 s (a provider that is down is asked about twice a minute per order).
const RETRY: FullJitterBackoff = FullJitterBackoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(30),
    max_retries: u32::MAX,
};

/// The consumer's part: write down what is to be done.
#[derive(Debug, Clone)]
pub struct Payments;

impl Handler for Payments {
    fn wants(&self, event_type: &str) -> bool {
        matches!(event_type, event::ORDER_PLACED | event::ORDER_CANCELLED)
    }

    async fn handle(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &Envelope,
    ) -> Result<(), HandleError> {
        match event.event_type.as_str() {
            event::ORDER_PLACED => request_charge(tx, event).await,
            event::ORDER_CANCELLED => request_refund(tx, event).await,
            _ => Ok(()),
        }
    }
}

/// `OrderPlaced`: a `pending` row, due now. A row already there (a redelivery, or a
/// cancellation that overtook this event) means it was decided before.
async fn request_charge(
    tx: &mut Transaction<'static, Any>,
    event: &Envelope,
) -> Result<(), HandleError> {
    let placed: OrderPlaced = event.decode()?;
    let amount = Cents::new(placed.total_cents)
        .map_err(|e| HandleError::Permanent(format!("bad amount: {e}")))?;
    let now = common::db::timestamp(common::db::now());
    let inserted = sqlx::query(
        "INSERT INTO payments (order_id, status, amount_cents, updated_at, request, due_at) \
         VALUES ($1, 'pending', $2, $3, $4, $3) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(event.order_id.to_string())
    .bind(amount.get())
    .bind(&now)
    .bind(serde_json::to_string(event).map_err(HandleError::transient)?)
    .execute(&mut **tx)
    .await?;
    if inserted.rows_affected() == 0 {
        tracing::info!(order_id = %event.order_id, "payment already decided; not charging");
    }
    Ok(())
}

/// `OrderCancelled`: saga compensation. Marks the row; the worker gives back what
/// was captured. No row: nothing was ever asked of the provider — `voided`, which a
/// late `OrderPlaced` respects.
async fn request_refund(
    tx: &mut Transaction<'static, Any>,
    event: &Envelope,
) -> Result<(), HandleError> {
    let status = sqlx::query("SELECT status FROM payments WHERE order_id = $1 FOR UPDATE")
        .bind(event.order_id.to_string())
        .fetch_optional(&mut **tx)
        .await?
        .map(|row| row.try_get::<String, _>("status"))
        .transpose()?;
    let now = common::db::timestamp(common::db::now());
    let cancel = serde_json::to_string(event).map_err(HandleError::transient)?;
    match status.as_deref() {
        None => {
            sqlx::query(
                "INSERT INTO payments (order_id, status, amount_cents, updated_at, cancel) \
                 VALUES ($1, 'voided', 0, $2, $3)",
            )
            .bind(event.order_id.to_string())
            .bind(&now)
            .bind(&cancel)
            .execute(&mut **tx)
            .await?;
            tracing::info!(order_id = %event.order_id, status = "voided", "payment compensated");
        }
        Some("pending" | "captured") => {
            sqlx::query(
                "UPDATE payments SET cancel = $1, due_at = $2, updated_at = $2 \
                 WHERE order_id = $3 AND cancel IS NULL",
            )
            .bind(&cancel)
            .bind(&now)
            .bind(event.order_id.to_string())
            .execute(&mut **tx)
            .await?;
        }
        Some(_) => {} // declined, refunded or voided: nothing to give back
    }
    Ok(())
}

/// A row the worker claimed, and what it will do about it.
#[derive(Debug)]
struct Due {
    order_id: OrderId,
    amount: Cents,
    /// Calls to the provider for this row, this one included.
    attempts: i64,
    request: Option<Envelope>,
    cancel: Option<Envelope>,
    action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Charge,
    Refund,
    /// Cancelled before the provider was ever asked: nothing to give back.
    Void,
    /// Due, but nothing to do (decided meanwhile).
    Nothing,
}

/// What the provider answered for one row.
#[derive(Debug)]
enum Answer {
    Charged(PaymentOutcome),
    Refunded(Result<RefundOutcome, String>),
    Voided,
    Nothing,
}

/// The worker's part: calls the provider for due rows and writes its answers.
#[derive(Debug, Clone)]
pub struct Worker {
    pool: AnyPool,
    database_url: String,
    client: PaymentClient,
    topics: Arc<Topics>,
    /// How long a claimed row is left to the worker that claimed it: twice the
    /// client's whole deadline, so a live worker always answers in time.
    lease: Duration,
}

impl Worker {
    /// Settles due rows until `shutdown`; the calls in flight then finish and are
    /// written (a call cut short would only be made again, after its lease).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut listener = PgListener::connect(&self.database_url)
            .await
            .context("payment worker: connecting to LISTEN")?;
        listener.listen(DUE_CHANNEL).await?;
        let mut calls: JoinSet<(Due, Answer, tracing::Span)> = JoinSet::new();
        loop {
            let free = MAX_CALLS - calls.len();
            if free > 0 {
                for due in self.claim(free).await? {
                    let worker = self.clone();
                    calls.spawn(async move { worker.call(due).await });
                }
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(done) = calls.join_next(), if !calls.is_empty() => {
                    let mut answers = vec![done?];
                    while let Some(more) = calls.try_join_next() {
                        answers.push(more?);
                    }
                    self.record(answers).await?;
                }
                notification = listener.recv() => { notification?; }
                () = tokio::time::sleep(POLL) => {}
            }
        }
        let mut answers = Vec::new();
        while let Some(done) = calls.join_next().await {
            answers.push(done?);
        }
        self.record(answers).await
    }

    /// Leases up to `n` due rows to this worker and counts the attempt.
    async fn claim(&self, n: usize) -> anyhow::Result<Vec<Due>> {
        let now = common::db::now();
        let until = now + chrono::Duration::from_std(self.lease).unwrap_or_default();
        let now = common::db::timestamp(now);
        let rows = sqlx::query(
            "UPDATE payments SET leased_until = $1, attempts = attempts + 1 WHERE order_id IN \
             (SELECT order_id FROM payments WHERE due_at <= $2 \
              AND (leased_until IS NULL OR leased_until < $2) \
              ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING order_id, status, amount_cents, request, cancel, attempts",
        )
        .bind(common::db::timestamp(until))
        .bind(&now)
        .bind(n as i64)
        .fetch_all(&self.pool)
        .await
        .context("claiming due payments")?;
        let mut due = Vec::with_capacity(rows.len());
        for row in rows {
            let envelope = |column: &str| -> anyhow::Result<Option<Envelope>> {
                row.try_get::<Option<String>, _>(column)?
                    .map(|json| serde_json::from_str(&json))
                    .transpose()
                    .with_context(|| format!("payments.{column}"))
            };
            let (request, cancel) = (envelope("request")?, envelope("cancel")?);
            let status: String = row.try_get("status")?;
            let attempts: i64 = row.try_get("attempts")?;
            let action = match (status.as_str(), cancel.is_some()) {
                ("pending", false) => Action::Charge,
                ("pending", true) if attempts == 1 => Action::Void,
                ("pending" | "captured", true) => Action::Refund,
                _ => Action::Nothing,
            };
            due.push(Due {
                order_id: row.try_get::<String, _>("order_id")?.parse()?,
                amount: Cents::new(row.try_get("amount_cents")?)?,
                attempts,
                request,
                cancel,
                action,
            });
        }
        Ok(due)
    }

    /// Asks the provider, inside a span that continues the order's trace.
    async fn call(self, due: Due) -> (Due, Answer, tracing::Span) {
        let cause = due.cancel.as_ref().or(due.request.as_ref());
        let span =
            tracing::info_span!("settle_payment", order_id = %due.order_id, action = ?due.action);
        common::telemetry::continue_trace(&span, cause.and_then(|c| c.traceparent.as_deref()));
        let correlation = cause.map(|c| c.correlation_id.clone()).unwrap_or_default();
        let answer = async {
            match due.action {
                Action::Charge => Answer::Charged(
                    self.client
                        .charge(due.order_id, due.amount, &correlation)
                        .await,
                ),
                Action::Refund => Answer::Refunded(
                    self.client
                        .refund(due.order_id, &correlation)
                        .await
                        .map_err(|err| err.to_string()),
                ),
                Action::Void => Answer::Voided,
                Action::Nothing => Answer::Nothing,
            }
        }
        .instrument(span.clone())
        .await;
        (due, answer, span)
    }

    /// Writes the answers and the events announcing them, in one transaction.
    async fn record(&self, answers: Vec<(Due, Answer, tracing::Span)>) -> anyhow::Result<()> {
        if answers.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (due, answer, span) in &answers {
            write_answer(&mut tx, &self.topics, due, answer)
                .instrument(span.clone())
                .await
                .with_context(|| format!("recording the payment of order {}", due.order_id))?;
        }
        tx.commit().await.context("recording payments: commit")?;
        Ok(())
    }
}

/// One answer: the row's new state and, if the row really changed, its event.
async fn write_answer(
    tx: &mut Transaction<'static, Any>,
    topics: &Topics,
    due: &Due,
    answer: &Answer,
) -> anyhow::Result<()> {
    let now = common::db::timestamp(common::db::now());
    let order = due.order_id.to_string();
    // The new status, the charge id, the status it may come from, and its event.
    let (status, charge_id, from, announced): (&str, Option<&str>, [&str; 2], Option<Envelope>) =
        match answer {
            Answer::Charged(PaymentOutcome::Captured { charge_id }) => {
                let paid = PaymentCompleted {
                    charge_id: charge_id.clone(),
                    amount_cents: due.amount.get(),
                };
                let event = caused(&due.request, event::PAYMENT_COMPLETED, to_json(&paid)?)?;
                ("captured", Some(charge_id), ["pending"; 2], Some(event))
            }
            Answer::Charged(PaymentOutcome::Declined { charge_id, reason }) => {
                let failed = PaymentFailed {
                    reason: reason.clone(),
                };
                let event = caused(&due.request, event::PAYMENT_FAILED, to_json(&failed)?)?;
                (
                    "declined",
                    charge_id.as_deref(),
                    ["pending"; 2],
                    Some(event),
                )
            }
            Answer::Refunded(Ok(RefundOutcome::Refunded(charges))) => {
                let refunded = PaymentRefunded {
                    charge_ids: charges.iter().map(|c| c.charge_id.clone()).collect(),
                };
                let event = caused(&due.cancel, event::PAYMENT_REFUNDED, to_json(&refunded)?)?;
                ("refunded", None, ["pending", "captured"], Some(event))
            }
            Answer::Refunded(Ok(RefundOutcome::NothingCaptured)) | Answer::Voided => {
                ("voided", None, ["pending", "captured"], None)
            }
            Answer::Charged(PaymentOutcome::Unknown { reason }) | Answer::Refunded(Err(reason)) => {
                // Not decided: try again later, with the same idempotency key.
                let ceiling = RETRY.ceiling(u32::try_from(due.attempts - 1).unwrap_or(0));
                let wait = ceiling.mul_f64(rand::random::<f64>());
                let at = common::db::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                sqlx::query(
                    "UPDATE payments SET leased_until = NULL, due_at = $1 WHERE order_id = $2",
                )
                .bind(common::db::timestamp(at))
                .bind(&order)
                .execute(&mut **tx)
                .await?;
                tracing::warn!(order_id = %due.order_id, reason, attempt = due.attempts, retry_in_ms = wait.as_millis() as u64, "payment outcome unknown; asking again later");
                return Ok(());
            }
            Answer::Nothing => {
                sqlx::query(
                    "UPDATE payments SET due_at = NULL, leased_until = NULL WHERE order_id = $1",
                )
                .bind(&order)
                .execute(&mut **tx)
                .await?;
                return Ok(());
            }
        };
    // A cancelled order's captured charge stays due: the refund comes next.
    let changed = sqlx::query(
        "UPDATE payments SET status = $1, charge_id = COALESCE($2, charge_id), updated_at = $3, \
         leased_until = NULL, \
         due_at = CASE WHEN $1 = 'captured' AND cancel IS NOT NULL THEN $3 ELSE NULL END \
         WHERE order_id = $4 AND (status = $5 OR status = $6)",
    )
    .bind(status)
    .bind(charge_id)
    .bind(&now)
    .bind(&order)
    .bind(from[0])
    .bind(from[1])
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Ok(()); // written already (another worker, after a lease ran out)
    }
    tracing::info!(order_id = %due.order_id, status, "payment settled");
    if let Some(announced) = announced {
        enqueue(tx, &topics.payments, &announced)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

/// The event answering `cause` (the row's `OrderPlaced` or `OrderCancelled`), in the
/// current span's trace.
fn caused(
    cause: &Option<Envelope>,
    event_type: &str,
    payload: serde_json::Value,
) -> anyhow::Result<Envelope> {
    let cause = cause
        .as_ref()
        .with_context(|| format!("no event to answer with {event_type}"))?;
    Ok(cause.caused(event_type, payload))
}

/// The worker's queue: how many charges and refunds are due or in flight (`due_at`
/// set), and since when the oldest is due (RFC 3339). Phase 3 shows them as
/// `payments_due` and `payments_oldest_due_age_seconds`: the queue in front of the
/// provider.
pub async fn queue(pool: &AnyPool) -> anyhow::Result<(i64, Option<String>)> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, MIN(due_at) AS oldest FROM payments WHERE due_at IS NOT NULL",
    )
    .fetch_one(pool)
    .await
    .context("reading the payment queue")?;
    Ok((row.try_get("n")?, row.try_get("oldest")?))
}

/// The payment service: the consumer of `orders` and the worker, over the payment
/// database.
#[derive(Debug)]
pub struct PaymentService {
    consumer: ConsumerService<Payments>,
    worker: Worker,
}

impl PaymentService {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let client = PaymentClient::new(&settings.payment_url(), settings.payment.clone());
        let consumer = ConsumerService::open(
            settings,
            SERVICE,
            &settings.payment_database_url,
            migrators(),
            |_| Payments,
        )
        .await?;
        let worker = Worker {
            pool: consumer.pool().clone(),
            database_url: settings.payment_database_url.clone(),
            client,
            topics: consumer.topics(),
            lease: settings.payment.deadline * 2,
        };
        Ok(PaymentService { consumer, worker })
    }

    /// Consumes and settles until `shutdown`; each part is restarted if it fails.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let worker = self.worker;
        let stop = shutdown.clone();
        let settle = super::supervise("payment worker".into(), shutdown.clone(), move || {
            worker.clone().run(stop.clone())
        });
        let (consumed, ()) = tokio::join!(self.consumer.run(shutdown), settle);
        consumed
    }
}
