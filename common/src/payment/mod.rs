//! The payment provider: a simulator reachable over real HTTP, and the resilient
//! client that talks to it.
//!
//! The simulator behaves like a real card processor in the ways that matter for the
//! lessons: it is slow (2–5 s by default), it fails transiently (30 % of requests by
//! default get a 503), it declines some cards (402), and it **charges before it
//! answers** — so a client that times out does not know whether the customer paid.
//! It de-duplicates by `Idempotency-Key`, and its ledger (`GET /ledger`) shows every
//! charge, so duplicate charges can be seen and counted.
//!
//! | provider endpoint        | what it does                                            |
//! |--------------------------|---------------------------------------------------------|
//! | `POST /payments`         | charge `{order_id, amount_cents}`; honours `Idempotency-Key` |
//! | `GET /payments/{order}`  | every charge recorded for an order (reconciliation); as flaky as charges |
//! | `POST /payments/{order}/refund` | refund the order's captured charges; idempotent; as flaky as charges |
//! | `GET /ledger`            | all charges, requests received, duplicate charges        |
//! | `GET`/`PUT /control`     | read / change failure rate, decline rate and latency live |

pub mod client;
pub mod simulator;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use client::{PaymentClient, PaymentClientConfig, PaymentOutcome, RefundOutcome};
pub use simulator::{LatencyRange, Simulator, SimulatorConfig};

/// Header carrying the client's idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// `POST /payments` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChargeRequest {
    #[schema(min_length = 1)]
    pub order_id: String,
    #[schema(minimum = 1)]
    pub amount_cents: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatus {
    Captured,
    Declined,
}

/// One line of the provider's ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChargeRecord {
    pub charge_id: String,
    pub order_id: String,
    pub amount_cents: i64,
    pub status: ChargeStatus,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub idempotency_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Set when a captured charge was refunded (saga compensation, phase 2).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub refunded_at: Option<DateTime<Utc>>,
}

/// The provider's books, as `GET /ledger` returns them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Ledger {
    /// Every `POST /payments` that reached the provider, including failed ones.
    pub requests_received: u64,
    pub charges: Vec<ChargeRecord>,
}

impl Ledger {
    /// Captured charges per order id.
    pub fn captured_by_order(&self) -> BTreeMap<&str, Vec<&ChargeRecord>> {
        let mut by_order: BTreeMap<&str, Vec<&ChargeRecord>> = BTreeMap::new();
        for charge in self
            .charges
            .iter()
            .filter(|c| c.status == ChargeStatus::Captured)
        {
            by_order.entry(&charge.order_id).or_default().push(charge);
        }
        by_order
    }

    /// Orders charged more than once: the side effect a retry must never duplicate.
    pub fn duplicate_charges(&self) -> BTreeMap<&str, usize> {
        self.captured_by_order()
            .into_iter()
            .filter(|(_, charges)| charges.len() > 1)
            .map(|(order, charges)| (order, charges.len()))
            .collect()
    }
}

/// `GET /payments/{order_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderCharges {
    pub order_id: String,
    pub charges: Vec<ChargeRecord>,
}
