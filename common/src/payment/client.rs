//! The resilient payment client: every protection phase 1 teaches, in the order a
//! call meets them.
//!
//! ```text
//! charge(order) ─▶ overall deadline ─▶ retry loop (backon + full jitter, retryable errors only)
//!                                          └─▶ circuit breaker permit ─▶ per-attempt timeout ─▶ HTTP
//! ```
//!
//! * **Per-attempt timeout** — one slow response must not hold the caller forever.
//! * **Retries** only for failures that may succeed next time (timeouts, connection
//!   errors, 5xx, 429). A decline (402) is an answer, not a failure.
//! * **Idempotency key** — the order id is sent as `Idempotency-Key`, so a retry after
//!   a timeout (when the first attempt *was* charged) is answered from the provider's
//!   records instead of charging again. `--payment-idempotency false` turns this off
//!   to show what happens without it: duplicate charges in the provider's ledger.
//! * **Overall deadline** — retries stop when the caller can no longer wait; the
//!   outcome is then [`PaymentOutcome::Unknown`], and the order stays in doubt until
//!   reconciliation asks the provider.
//! * **Circuit breaker** — when most recent calls failed, fail fast without a request.

use super::{ChargeRecord, ChargeRequest, IDEMPOTENCY_KEY_HEADER, OrderCharges};
use crate::domain::{Cents, OrderId};
use crate::http::REQUEST_ID_HEADER;
use crate::resilience::{BreakerConfig, BreakerOpen, CircuitBreaker, FullJitterBackoff};
use backon::Retryable;
use reqwest::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tracing::Instrument;

/// Resilience settings for calls to the payment provider.
#[derive(Debug, Clone, clap::Args)]
pub struct PaymentClientConfig {
    /// Timeout of one payment attempt.
    #[arg(long = "payment-attempt-timeout", env = "PAYMENT_ATTEMPT_TIMEOUT", default_value = "6s", value_parser = humantime::parse_duration)]
    pub attempt_timeout: Duration,
    /// Overall deadline for a payment, retries included; past it the order stays
    /// `placed` (in doubt) and the reconciler settles it.
    #[arg(long = "payment-deadline", env = "PAYMENT_DEADLINE", default_value = "15s", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
    /// Retries after the first attempt.
    #[arg(
        long = "payment-max-retries",
        env = "PAYMENT_MAX_RETRIES",
        default_value_t = 3
    )]
    pub max_retries: u32,
    /// Ceiling of the first backoff delay (doubles per retry, full jitter).
    #[arg(long = "payment-backoff-base", env = "PAYMENT_BACKOFF_BASE", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub backoff_base: Duration,
    /// Largest backoff delay.
    #[arg(long = "payment-backoff-cap", env = "PAYMENT_BACKOFF_CAP", default_value = "2s", value_parser = humantime::parse_duration)]
    pub backoff_cap: Duration,
    /// Send the order id as Idempotency-Key. `false` shows how retries charge twice.
    #[arg(long = "payment-idempotency", env = "PAYMENT_IDEMPOTENCY", default_value_t = true, action = clap::ArgAction::Set)]
    pub idempotency: bool,
    /// Circuit breaker: number of recent calls the failure rate is computed over.
    #[arg(long = "breaker-window", env = "BREAKER_WINDOW", default_value_t = 20)]
    pub breaker_window: usize,
    /// Circuit breaker: calls needed before it may open.
    #[arg(
        long = "breaker-min-calls",
        env = "BREAKER_MIN_CALLS",
        default_value_t = 10
    )]
    pub breaker_min_calls: usize,
    /// Circuit breaker: failure rate (0..1) that opens it.
    #[arg(
        long = "breaker-failure-threshold",
        env = "BREAKER_FAILURE_THRESHOLD",
        default_value_t = 0.7
    )]
    pub breaker_failure_threshold: f64,
    /// Circuit breaker: how long it stays open before one probe is let through.
    #[arg(long = "breaker-cooldown", env = "BREAKER_COOLDOWN", default_value = "10s", value_parser = humantime::parse_duration)]
    pub breaker_cooldown: Duration,
}

impl Default for PaymentClientConfig {
    fn default() -> Self {
        let breaker = BreakerConfig::default();
        PaymentClientConfig {
            attempt_timeout: Duration::from_secs(6),
            deadline: Duration::from_secs(15),
            max_retries: 3,
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(2),
            idempotency: true,
            breaker_window: breaker.window,
            breaker_min_calls: breaker.min_calls,
            breaker_failure_threshold: breaker.failure_threshold,
            breaker_cooldown: breaker.cooldown,
        }
    }
}

impl PaymentClientConfig {
    pub fn backoff(&self) -> FullJitterBackoff {
        FullJitterBackoff {
            base: self.backoff_base,
            cap: self.backoff_cap,
            max_retries: self.max_retries,
        }
    }

    pub fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            window: self.breaker_window,
            min_calls: self.breaker_min_calls,
            failure_threshold: self.breaker_failure_threshold,
            cooldown: self.breaker_cooldown,
        }
    }
}

/// What became of a charge, from the caller's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// The customer paid.
    Captured { charge_id: String },
    /// The provider said no; final. `charge_id` is set when the provider recorded it.
    Declined {
        charge_id: Option<String>,
        reason: String,
    },
    /// We do not know: deadline passed, breaker open, or every attempt failed. The
    /// customer may or may not have been charged; only the provider can tell.
    Unknown { reason: String },
}

impl PaymentOutcome {
    /// `captured`, `declined` or `unknown`: a label, not a message.
    pub fn kind(&self) -> &'static str {
        match self {
            PaymentOutcome::Captured { .. } => "captured",
            PaymentOutcome::Declined { .. } => "declined",
            PaymentOutcome::Unknown { .. } => "unknown",
        }
    }
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error(transparent)]
    BreakerOpen(#[from] BreakerOpen),
    #[error("attempt timed out")]
    Timeout,
    #[error("transport error: {0}")]
    Transport(reqwest::Error),
    #[error("provider answered {0}")]
    Server(StatusCode),
    #[error("provider rejected the request ({0}): {1}")]
    Rejected(StatusCode, String),
    /// A success status whose body we cannot read: the customer may well have been
    /// charged, so this is *unknown*, never a failure.
    #[error("provider answered {0} with an unreadable body: {1}")]
    Unreadable(StatusCode, String),
}

impl AttemptError {
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            AttemptError::Timeout | AttemptError::Transport(_) | AttemptError::Server(_)
        )
    }
}

/// Errors of the single-attempt provider calls (lookup, refund). Their callers retry
/// on their own schedule (the reconciler's tick, the consumer's retry topic).
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    BreakerOpen(#[from] BreakerOpen),
    #[error("payment provider call failed: {0}")]
    Http(#[from] reqwest::Error),
}

/// What a refund request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// These charges are refunded (now, or by an earlier call).
    Refunded(Vec<ChargeRecord>),
    /// The provider has no captured charge for the order: nothing to give back.
    NothingCaptured,
}

#[derive(Debug, Clone)]
pub struct PaymentClient {
    http: reqwest::Client,
    base_url: String,
    config: PaymentClientConfig,
    breaker: Arc<CircuitBreaker>,
}

impl PaymentClient {
    pub fn new(base_url: &str, config: PaymentClientConfig) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .build()
            .expect("a plain HTTP client always builds");
        let breaker = CircuitBreaker::new("payment-provider", config.breaker());
        PaymentClient {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            config,
            breaker,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    pub fn config(&self) -> &PaymentClientConfig {
        &self.config
    }

    /// Charges `amount` for `order`, with every protection described above.
    pub async fn charge(&self, order: OrderId, amount: Cents, request_id: &str) -> PaymentOutcome {
        // One `payment` span per charge, retries included: what the customer waits for
        // (phase 3 turns it into `payment_duration_seconds{outcome}`).
        let span =
            tracing::info_span!("payment", order_id = %order, outcome = tracing::field::Empty);
        let outcome = self
            .charge_with_retries(order, amount, request_id)
            .instrument(span.clone())
            .await;
        span.record("outcome", outcome.kind());
        outcome
    }

    async fn charge_with_retries(
        &self,
        order: OrderId,
        amount: Cents,
        request_id: &str,
    ) -> PaymentOutcome {
        let attempts = AtomicU32::new(0);
        let attempt = || {
            let n = attempts.fetch_add(1, Ordering::Relaxed) + 1;
            self.attempt(order, amount, request_id)
                .instrument(tracing::info_span!("payment_attempt", attempt = n))
        };
        let with_retries = attempt
            .retry(self.config.backoff())
            .when(AttemptError::is_retryable)
            .notify(|err, delay| {
                tracing::warn!(order_id = %order, error = %err, retry_in_ms = delay.as_millis() as u64, "payment attempt failed; will retry")
            });
        let outcome = match tokio::time::timeout(self.config.deadline, with_retries).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(AttemptError::Rejected(status, reason))) => PaymentOutcome::Declined {
                charge_id: None,
                reason: format!("provider rejected the request ({status}): {reason}"),
            },
            Ok(Err(err)) => PaymentOutcome::Unknown {
                reason: err.to_string(),
            },
            Err(_elapsed) => PaymentOutcome::Unknown {
                reason: format!(
                    "overall payment deadline of {:?} passed",
                    self.config.deadline
                ),
            },
        };
        let attempts = attempts.load(Ordering::Relaxed);
        match &outcome {
            PaymentOutcome::Captured { charge_id } => {
                tracing::info!(order_id = %order, charge_id, attempts, "payment captured")
            }
            PaymentOutcome::Declined { reason, .. } => {
                tracing::info!(order_id = %order, reason, attempts, "payment declined")
            }
            PaymentOutcome::Unknown { reason } => {
                tracing::warn!(order_id = %order, reason, attempts, "payment outcome unknown; order stays in doubt")
            }
        }
        outcome
    }

    async fn attempt(
        &self,
        order: OrderId,
        amount: Cents,
        request_id: &str,
    ) -> Result<PaymentOutcome, AttemptError> {
        let permit = self.breaker.try_acquire()?;
        let mut request = self
            .http
            .post(format!("{}/payments", self.base_url))
            .timeout(self.config.attempt_timeout)
            .header(REQUEST_ID_HEADER.as_str(), request_id)
            .json(&ChargeRequest {
                order_id: order.to_string(),
                amount_cents: amount.get(),
            });
        if self.config.idempotency {
            request = request.header(IDEMPOTENCY_KEY_HEADER, order.to_string());
        }
        if let Some(traceparent) = crate::telemetry::current_traceparent() {
            request = request.header("traceparent", traceparent);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                permit.failure();
                return Err(if err.is_timeout() {
                    AttemptError::Timeout
                } else {
                    AttemptError::Transport(err)
                });
            }
        };
        let status = response.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            permit.failure();
            return Err(AttemptError::Server(status));
        }
        // Anything else is an answer from a healthy provider.
        let body = match response.text().await {
            Ok(body) => body,
            Err(err) => {
                permit.failure();
                return Err(if err.is_timeout() {
                    AttemptError::Timeout
                } else {
                    AttemptError::Transport(err)
                });
            }
        };
        permit.success();
        match status {
            StatusCode::OK | StatusCode::CREATED => {
                let record: ChargeRecord = serde_json::from_str(&body)
                    .map_err(|e| AttemptError::Unreadable(status, e.to_string()))?;
                Ok(PaymentOutcome::Captured {
                    charge_id: record.charge_id,
                })
            }
            StatusCode::PAYMENT_REQUIRED => {
                let charge_id = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("charge_id")?.as_str().map(str::to_owned));
                Ok(PaymentOutcome::Declined {
                    charge_id,
                    reason: "card declined".into(),
                })
            }
            _ => Err(AttemptError::Rejected(status, body)),
        }
    }

    /// Every charge the provider recorded for `order` (reconciliation's question:
    /// "did this customer pay?"). Goes through the breaker like any other call.
    pub async fn lookup(
        &self,
        order: OrderId,
        request_id: &str,
    ) -> Result<Vec<ChargeRecord>, LookupError> {
        let permit = self.breaker.try_acquire()?;
        let result = async {
            self.http
                .get(format!("{}/payments/{order}", self.base_url))
                .timeout(self.config.attempt_timeout)
                .header(REQUEST_ID_HEADER.as_str(), request_id)
                .send()
                .await?
                .error_for_status()?
                .json::<OrderCharges>()
                .await
        }
        .await;
        match result {
            Ok(found) => {
                permit.success();
                Ok(found.charges)
            }
            Err(err) => {
                permit.failure();
                Err(err.into())
            }
        }
    }

    /// Refunds every captured charge of `order` (saga compensation). Idempotent on the
    /// provider's side, so it is safe to call again after an error.
    pub async fn refund(
        &self,
        order: OrderId,
        request_id: &str,
    ) -> Result<RefundOutcome, LookupError> {
        let permit = self.breaker.try_acquire()?;
        let result = async {
            let response = self
                .http
                .post(format!("{}/payments/{order}/refund", self.base_url))
                .timeout(self.config.attempt_timeout)
                .header(REQUEST_ID_HEADER.as_str(), request_id)
                .send()
                .await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Ok(RefundOutcome::NothingCaptured);
            }
            let found = response.error_for_status()?.json::<OrderCharges>().await?;
            Ok(RefundOutcome::Refunded(found.charges))
        }
        .await;
        match result {
            Ok(outcome) => {
                permit.success();
                Ok(outcome)
            }
            Err(err) => {
                permit.failure();
                Err(LookupError::Http(err))
            }
        }
    }
}
