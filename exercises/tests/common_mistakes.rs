//! The checks catch the mistakes learners actually make, not only the starter's.
//! Each wrong implementation here must be rejected, with a message about *its* bug.

use exercises::ex01_backoff::{self, Policy, RetrySchedule};
use exercises::ex02_breaker::{self, Breaker, Config, State};
use exercises::ex04_retry_safe_payment::{
    self, ChargeId, PayError, PaymentClient, PaymentProvider, ProviderError,
};
use exercises::{
    Failure, ex05_idempotent_consumer, ex06_outbox_relay, ex07_poison_message, ex09_percentiles,
    ex10_consumer_lag, run_check,
};
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

/// Publishes first (right), then marks the batch by a range of ids (wrong): "up to
/// the last id" or, with `CLOSED`, "between the first and the last".
struct MarksByRange<const CLOSED: bool> {
    pool: sqlx::AnyPool,
}
impl<const CLOSED: bool> ex06_outbox_relay::OutboxRelay for MarksByRange<CLOSED> {
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
        let (mut first, mut last) = (None, 0i64);
        for row in &rows {
            let (topic, key, envelope): (String, String, String) = (
                row.try_get("topic")?,
                row.try_get("message_key")?,
                row.try_get("envelope")?,
            );
            publisher.publish(&topic, &key, &envelope).await?;
            last = row.try_get("id")?;
            first.get_or_insert(last);
        }
        let low = if CLOSED { first.unwrap_or(0) } else { 0 };
        sqlx::query(
            "UPDATE outbox SET published_at = $1 \
             WHERE published_at IS NULL AND id >= $2 AND id <= $3",
        )
        .bind(common::db::timestamp(common::db::now()))
        .bind(low)
        .bind(last)
        .execute(&self.pool)
        .await?;
        Ok(rows.len())
    }
}

#[test]
fn a_relay_that_marks_by_range_loses_the_straggler() {
    for message in [
        failure_of(ex06_outbox_relay::check::check::<MarksByRange<false>>),
        failure_of(ex06_outbox_relay::check::check::<MarksByRange<true>>),
    ] {
        assert!(
            message.contains("older transaction") && message.contains("lost"),
            "{message}"
        );
    }
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

/// Dead-letters every failure, transient ones too, and ignores a failed publish.
struct DeadLettersEverything;
impl ex07_poison_message::PoisonRouter for DeadLettersEverything {
    fn new() -> Self {
        DeadLettersEverything
    }
    async fn route(
        &self,
        message: ex07_poison_message::Incoming<'_>,
        apply: &dyn ex07_poison_message::Apply,
        publish: &dyn ex07_poison_message::Publish,
    ) -> anyhow::Result<ex07_poison_message::Routed> {
        let reason = match message
            .payload
            .map(serde_json::from_slice::<ex07_poison_message::Envelope>)
        {
            None => "empty message".to_owned(),
            Some(Err(err)) => err.to_string(),
            Some(Ok(event)) => match apply.apply(&event).await {
                Ok(()) => return Ok(ex07_poison_message::Routed::Handled),
                Err(err) => err.to_string(),
            },
        };
        let headers = [
            ("dlq_reason", reason),
            ("dlq_source_topic", message.topic.to_owned()),
            ("dlq_source_partition", message.partition.to_string()),
            ("dlq_source_offset", message.offset.to_string()),
        ];
        let dlq = format!("{}.dlq", message.topic);
        let _ = publish
            .publish(&dlq, message.key, message.payload, &headers)
            .await;
        Ok(ex07_poison_message::Routed::DeadLettered)
    }
}

#[test]
fn a_transient_failure_is_not_poison() {
    let message = failure_of(ex07_poison_message::check::check::<DeadLettersEverything>);
    assert!(
        message.contains("is lost") || message.contains("not poison"),
        "{message}"
    );
}

// ---- exercise 5 (needs `cargo xtask up`) ------------------------------------

/// Claims the event atomically (right), but in its own statement, committed before
/// the handler's transaction (wrong). With `RELEASE`, it deletes the claim again when
/// the handler fails — which cleans up an error, never a crash.
struct ClaimsFirst<H, const RELEASE: bool> {
    pool: sqlx::AnyPool,
    handler: H,
}
impl<H: ex05_idempotent_consumer::Handler, const RELEASE: bool>
    ex05_idempotent_consumer::IdempotentEffect<H> for ClaimsFirst<H, RELEASE>
{
    fn new(pool: sqlx::AnyPool, handler: H) -> Self {
        ClaimsFirst { pool, handler }
    }
}
impl<H: ex05_idempotent_consumer::Handler, const RELEASE: bool> ex05_idempotent_consumer::Effect
    for ClaimsFirst<H, RELEASE>
{
    async fn apply(
        &self,
        consumer: &str,
        event: &ex05_idempotent_consumer::Envelope,
    ) -> anyhow::Result<ex05_idempotent_consumer::Verdict> {
        use ex05_idempotent_consumer::{HandleError, Verdict};
        let claimed = sqlx::query(
            "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (consumer, event_id) DO NOTHING",
        )
        .bind(consumer)
        .bind(event.event_id.to_string())
        .bind(common::db::timestamp(common::db::now()))
        .execute(&self.pool)
        .await?;
        if claimed.rows_affected() == 0 {
            return Ok(Verdict::Duplicate);
        }
        let mut tx = self.pool.begin().await?;
        let verdict = match self.handler.handle(&mut tx, event).await {
            Ok(()) => {
                tx.commit().await?;
                return Ok(Verdict::Applied);
            }
            Err(HandleError::Transient(err)) => Verdict::Retry(err.to_string()),
            Err(HandleError::Permanent(reason)) => Verdict::DeadLetter(reason),
        };
        drop(tx);
        if RELEASE {
            sqlx::query("DELETE FROM processed_events WHERE consumer = $1 AND event_id = $2")
                .bind(consumer)
                .bind(event.event_id.to_string())
                .execute(&self.pool)
                .await?;
        }
        Ok(verdict)
    }
}

type Ledger = ex05_idempotent_consumer::check::Ledger;

#[test]
fn claiming_outside_the_effects_transaction_loses_the_effect() {
    let message = failure_of(ex05_idempotent_consumer::check::check::<ClaimsFirst<Ledger, false>>);
    assert!(message.contains("data lost"), "{message}");
}

#[test]
fn releasing_the_claim_on_failure_does_not_survive_a_crash() {
    let message = failure_of(ex05_idempotent_consumer::check::check::<ClaimsFirst<Ledger, true>>);
    assert!(message.contains("before anything committed"), "{message}");
}

// ---- exercise 9 -------------------------------------------------------------

/// Right interpolation, but "infinity" when the rank falls in the +Inf bucket.
struct InfiniteTail;
impl ex09_percentiles::Percentiles for InfiniteTail {
    fn new() -> Self {
        InfiniteTail
    }
    fn quantile(&self, q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
        let finite = buckets.iter().rev().find(|(le, _)| le.is_finite())?;
        let total = buckets.last()?.1;
        if q * total > finite.1 {
            return Some(f64::INFINITY);
        }
        ex09_percentiles::solution::Estimator.quantile(q, buckets)
    }
    fn since(&self, before: &[(f64, f64)], after: &[(f64, f64)]) -> ex09_percentiles::Buckets {
        ex09_percentiles::solution::Estimator.since(before, after)
    }
}

#[test]
fn an_infinite_p99_is_caught() {
    let message = failure_of(ex09_percentiles::check::check::<InfiniteTail>);
    assert!(message.contains("highest finite bound"), "{message}");
}

// ---- exercise 10 (needs `cargo xtask up`) -----------------------------------

/// Handles "never committed" right, but counts the committed offset as finished.
struct OffByOne;
impl ex10_consumer_lag::LagMeter for OffByOne {
    fn new() -> Self {
        OffByOne
    }
    fn lag(
        &self,
        brokers: &str,
        group: &str,
        topic: &str,
    ) -> anyhow::Result<std::collections::BTreeMap<i32, i64>> {
        let mut lag = ex10_consumer_lag::solution::Meter.lag(brokers, group, topic)?;
        for value in lag.values_mut() {
            *value = (*value - 1).max(0);
        }
        Ok(lag)
    }
}

#[test]
fn lag_off_by_one_is_caught() {
    let message = failure_of(ex10_consumer_lag::check::check::<OffByOne>);
    assert!(message.contains("4 is the next it will read"), "{message}");
}

/// Handles the committed offset right, but counts a partition the group never
/// committed on from offset 0 (true only until retention deletes the oldest
/// messages).
struct FromZero;
impl ex10_consumer_lag::LagMeter for FromZero {
    fn new() -> Self {
        FromZero
    }
    fn lag(
        &self,
        brokers: &str,
        group: &str,
        topic: &str,
    ) -> anyhow::Result<std::collections::BTreeMap<i32, i64>> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let timeout = std::time::Duration::from_secs(10);
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        let mut partitions = rdkafka::TopicPartitionList::new();
        for p in 0..3 {
            partitions.add_partition(topic, p);
        }
        let committed = consumer.committed_offsets(partitions, timeout)?;
        let mut lag = std::collections::BTreeMap::new();
        for element in committed.elements() {
            let (_low, high) = consumer.fetch_watermarks(topic, element.partition(), timeout)?;
            let next = match element.offset() {
                rdkafka::Offset::Offset(next) => next,
                _ => 0,
            };
            lag.insert(element.partition(), (high - next).max(0));
        }
        Ok(lag)
    }
}

#[test]
fn lag_counted_from_zero_is_caught_once_retention_deleted_the_oldest() {
    let message = failure_of(ex10_consumer_lag::check::check::<FromZero>);
    assert!(message.contains("not at 0"), "{message}");
    assert!(message.contains("1: 5"), "{message}");
}
