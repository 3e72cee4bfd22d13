//! The checks catch the mistakes learners actually make, not only the starter's.
//! Each wrong implementation here must be rejected, with a message about *its* bug.

use exercises::ex01_backoff::{self, Policy, RetrySchedule};
use exercises::ex02_breaker::{self, Breaker, Config, State};
use exercises::ex04_retry_safe_payment::{
    self, ChargeId, PayError, PaymentClient, PaymentProvider, ProviderError,
};
use exercises::{Failure, ex06_outbox_relay, ex07_poison_message, run_check};
use std::time::{Duration, Instant};

fn failure_of(check: fn() -> Result<(), Failure>) -> String {
    match run_check(check) {
        Ok(()) => panic!("a wrong implementation passed the check"),
        Err(failure) => failure.0,
    }
}

// ---- exercise 1 -------------------------------------------------------------

/// Right ceilings and full jitter, but no deadline.
struct NoDeadline;
impl RetrySchedule for NoDeadline {
    fn next_delay(&self, p: &Policy, n: u32, e: Duration, r: f64) -> Option<Duration> {
        let unlimited = Policy {
            deadline: Duration::MAX,
            ..*p
        };
        ex01_backoff::solution::Schedule.next_delay(&unlimited, n, e, r)
    }
}

/// "Equal jitter": half the ceiling plus a random half.
struct EqualJitter;
impl RetrySchedule for EqualJitter {
    fn next_delay(&self, p: &Policy, n: u32, e: Duration, r: f64) -> Option<Duration> {
        ex01_backoff::solution::Schedule.next_delay(p, n, e, 0.5 + r / 2.0)
    }
}

#[test]
fn backoff_without_a_deadline_is_caught() {
    let message = failure_of(|| ex01_backoff::check::check(&NoDeadline));
    assert!(message.contains("deadline"), "{message}");
}

#[test]
fn equal_jitter_is_not_mistaken_for_full_jitter() {
    let message = failure_of(|| ex01_backoff::check::check(&EqualJitter));
    assert!(message.contains("full jitter"), "{message}");
}

// ---- exercise 2 -------------------------------------------------------------

/// The reference, except that HalfOpen lets every caller through.
#[derive(Debug)]
struct HalfOpenAdmitsEveryone(ex02_breaker::solution::CircuitBreaker);
impl Breaker for HalfOpenAdmitsEveryone {
    fn new(config: Config) -> Self {
        HalfOpenAdmitsEveryone(Breaker::new(config))
    }
    fn allow(&mut self, now: Instant) -> bool {
        let half_open = self.0.state(now) == State::HalfOpen;
        self.0.allow(now) || half_open
    }
    fn record(&mut self, now: Instant, success: bool) {
        self.0.record(now, success)
    }
    fn state(&self, now: Instant) -> State {
        self.0.state(now)
    }
}

#[test]
fn a_half_open_breaker_that_admits_everyone_is_caught() {
    let message = failure_of(ex02_breaker::check::check::<HalfOpenAdmitsEveryone>);
    assert!(message.contains("exactly one probe"), "{message}");
}

// ---- exercise 4 -------------------------------------------------------------

/// Sends a key, but a new one on every attempt.
struct FreshKeyPerAttempt;
impl PaymentClient for FreshKeyPerAttempt {
    fn new() -> Self {
        FreshKeyPerAttempt
    }
    fn pay(&self, p: &dyn PaymentProvider, order: &str, cents: u64) -> Result<ChargeId, PayError> {
        for attempt in 0..3 {
            let key = format!("{order}-{attempt}");
            match p.charge(order, cents, Some(&key)) {
                Ok(charge) => return Ok(charge),
                Err(ProviderError::Declined) => return Err(PayError::Declined),
                Err(ProviderError::Timeout) => {}
            }
        }
        Err(PayError::Unavailable)
    }
}

/// The same key for every order.
struct ConstantKey;
impl PaymentClient for ConstantKey {
    fn new() -> Self {
        ConstantKey
    }
    fn pay(&self, p: &dyn PaymentProvider, order: &str, cents: u64) -> Result<ChargeId, PayError> {
        for _ in 0..3 {
            match p.charge(order, cents, Some("payment")) {
                Ok(charge) => return Ok(charge),
                Err(ProviderError::Declined) => return Err(PayError::Declined),
                Err(ProviderError::Timeout) => {}
            }
        }
        Err(PayError::Unavailable)
    }
}

#[test]
fn a_fresh_key_per_attempt_still_charges_twice() {
    let message = failure_of(ex04_retry_safe_payment::check::check::<FreshKeyPerAttempt>);
    assert!(message.contains("charged 2 times"), "{message}");
}

#[test]
fn one_key_for_every_order_is_caught() {
    let message = failure_of(ex04_retry_safe_payment::check::check::<ConstantKey>);
    assert!(
        message.contains("derive the key from the order id"),
        "{message}"
    );
}

// ---- exercise 6 (needs `cargo xtask up`) ------------------------------------

/// Publishes first (right), then marks "everything up to the last id" (wrong).
struct MarksByRange {
    pool: sqlx::AnyPool,
}
impl ex06_outbox_relay::OutboxRelay for MarksByRange {
    fn new(pool: sqlx::AnyPool) -> Self {
        MarksByRange { pool }
    }
    async fn relay_batch(
        &self,
        publisher: &dyn ex06_outbox_relay::Publish,
        limit: i64,
    ) -> anyhow::Result<usize> {
        use sqlx::Row;
        let rows = sqlx::query(
            "SELECT id, topic, message_key, envelope FROM outbox \
             WHERE published_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut last = 0i64;
        for row in &rows {
            let (topic, key, envelope): (String, String, String) = (
                row.try_get("topic")?,
                row.try_get("message_key")?,
                row.try_get("envelope")?,
            );
            publisher.publish(&topic, &key, &envelope).await?;
            last = row.try_get("id")?;
        }
        sqlx::query("UPDATE outbox SET published_at = $1 WHERE published_at IS NULL AND id <= $2")
            .bind(common::db::timestamp(common::db::now()))
            .bind(last)
            .execute(&self.pool)
            .await?;
        Ok(rows.len())
    }
}

#[test]
fn a_relay_that_marks_by_range_loses_the_straggler() {
    let message = failure_of(ex06_outbox_relay::check::check::<MarksByRange>);
    assert!(
        message.contains("older transaction") && message.contains("lost"),
        "{message}"
    );
}

// ---- exercise 7 (needs `cargo xtask up`) ------------------------------------

/// Never blocks the partition — by dropping what it cannot read.
struct SkipsPoison;
impl ex07_poison_message::PoisonRouter for SkipsPoison {
    fn new() -> Self {
        SkipsPoison
    }
    async fn route(
        &self,
        message: ex07_poison_message::Incoming<'_>,
        apply: &dyn ex07_poison_message::Apply,
        _publish: &dyn ex07_poison_message::Publish,
    ) -> anyhow::Result<ex07_poison_message::Routed> {
        if let Some(Ok(event)) = message
            .payload
            .map(serde_json::from_slice::<ex07_poison_message::Envelope>)
        {
            let _ = apply.apply(&event).await;
        }
        Ok(ex07_poison_message::Routed::Handled)
    }
}

#[test]
fn a_poison_message_skipped_silently_is_caught() {
    let message = failure_of(ex07_poison_message::check::check::<SkipsPoison>);
    assert!(message.contains("skipping it silently"), "{message}");
}
