//! Exercise 5: an idempotent consumer — the effect and the "processed" record in one
//! transaction.
//!
//! Kafka delivers at least once: after a crash, a rebalance or a retry, the same event
//! arrives again. A consumer is *effectively once* only if applying an event and
//! remembering that it was applied happen together, atomically. The learner writes
//! phase 2's own [`Effect`] trait — the piece [`EventConsumer`] calls for every
//! message — and the checker runs it against a real PostgreSQL database and, at the
//! end, inside phase 2's real consumer on a real topic.
//!
//! [`EventConsumer`]: phase2_events::consumer::EventConsumer

pub mod check;
pub mod solution;
pub mod starter;
crate::yours!("ex05_idempotent_consumer");

pub use phase2_events::consumer::{Effect, HandleError, Handler, Verdict};
pub use phase2_events::events::Envelope;
use sqlx::AnyPool;

/// What the learner implements (their copy of `starter.rs`) and the reference
/// implements (`solution.rs`, which is phase 2's own `Transactional`).
pub trait IdempotentEffect<H: Handler>: Effect {
    /// An effect that runs `handler` for each new event, recording processed events
    /// in `pool`'s `processed_events (consumer, event_id)` table.
    fn new(pool: AnyPool, handler: H) -> Self;
}

pub const HINTS: &[&str] = &[
    "Record the event inside the same transaction as the handler's effect: `let mut tx = \
     self.pool.begin().await?`, record it, `self.handler.handle(&mut tx, event)`, then commit. If \
     anything fails before the commit — the handler, the claim, the process — neither the \
     effect nor the record survives, and the redelivery starts from a clean slate.",
    "Then concurrency. Two separate steps — \"have I seen it?\" then \"apply and record\" — leave a gap. Eight \
     redeliveries arriving together all pass the first step before any of them reaches the \
     second. The check and the claim must be one statement.",
    "`INSERT INTO processed_events (consumer, event_id, processed_at) VALUES (…) ON CONFLICT \
     (consumer, event_id) DO NOTHING` is a check-and-claim in one: `rows_affected() == 0` means \
     someone else has it. A concurrent inserter of the same key waits for the first to commit \
     or roll back, then knows.",
    "On a handler error, roll back and return `Verdict::Retry` (transient) or \
     `Verdict::DeadLetter` (permanent); a duplicate is `Verdict::Duplicate` after a rollback. \
     The reference is `Transactional::apply` in phase2-events/src/consumer.rs.",
];

pub const EXERCISE: crate::Exercise = crate::Exercise {
    number: 5,
    dir: "ex05_idempotent_consumer",
    title: "an idempotent consumer (effect and processed-event in one transaction)",
    readme: include_str!("README.md"),
    hints: HINTS,
    needs: &[
        crate::infra::Service::Postgres,
        crate::infra::Service::Kafka,
    ],
    check_starter: check::check::<starter::Consumer<check::Ledger>>,
    check_yours: check::check::<yours::Consumer<check::Ledger>>,
    check_solution: check::check::<solution::Consumer<check::Ledger>>,
};
