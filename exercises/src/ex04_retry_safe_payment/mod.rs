//! Exercise 4: a retry-safe payment call (the duplicate-charge trap).
//!
//! A timeout does not mean "not charged": the provider may have charged the card and
//! lost the response. Retrying the same request then charges twice — unless every
//! attempt carries the same idempotency key, which the provider uses to return the
//! original charge instead of making a new one.

pub mod check;
pub mod solution;
pub mod starter;
crate::yours!("ex04_retry_safe_payment");

/// The provider's id for one charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeId(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderError {
    /// No answer in time. The charge may or may not have happened.
    Timeout,
    /// The card was declined. Retrying will not change that.
    Declined,
}

/// The payment provider, as the client sees it (the checker supplies a fake).
pub trait PaymentProvider {
    /// Charge `amount_cents` for `order_id`. With an `idempotency_key` the provider
    /// charges at most once per key and returns the same [`ChargeId`] for repeats.
    fn charge(
        &self,
        order_id: &str,
        amount_cents: u64,
        idempotency_key: Option<&str>,
    ) -> Result<ChargeId, ProviderError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayError {
    Declined,
    /// Still timing out after the retries: the order is in doubt (phase 1's
    /// reconciler settles it later with the same key).
    Unavailable,
}

/// What the learner implements (their copy of `starter.rs`) and the reference implements (in
/// `solution.rs`).
pub trait PaymentClient {
    fn new() -> Self
    where
        Self: Sized;

    /// Pay for an order, retrying timeouts a few times.
    fn pay(
        &self,
        provider: &dyn PaymentProvider,
        order_id: &str,
        amount_cents: u64,
    ) -> Result<ChargeId, PayError>;
}

pub const HINTS: &[&str] = &[
    "The fake provider charges the card and *then* times out. Your retry is a second, \
     independent charge unless the provider can tell it is the same payment.",
    "Pass an idempotency key. It must be the same on every attempt for one order — a fresh \
     key per attempt is as bad as none.",
    "It must also differ between orders: a constant key makes the second order get the \
     first order's charge back. Derive it from the order id.",
    "A decline is an answer, not a transient failure: don't retry it. See \
     common/src/payment/client.rs for the finished pattern.",
];

pub const EXERCISE: crate::Exercise = crate::Exercise {
    number: 4,
    dir: "ex04_retry_safe_payment",
    title: "a retry-safe payment call (the duplicate-charge trap)",
    readme: include_str!("README.md"),
    hints: HINTS,
    needs: &[],
    check_starter: check::check::<starter::Client>,
    check_yours: check::check::<yours::Client>,
    check_solution: check::check::<solution::Client>,
};
