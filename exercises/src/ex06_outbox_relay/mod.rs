//! Exercise 6: an outbox relay that survives a crash between publish and mark.
//!
//! The transactional outbox (phase 2) makes "state changed" and "event to publish"
//! one commit. Something must then move the rows to Kafka: the relay. Publishing and
//! marking a row published are two different systems, so there is always a moment
//! when one happened and the other did not. The relay must be built so that a crash
//! at *that* moment causes a duplicate (harmless: consumers de-duplicate by
//! `event_id`, exercise 5) and never a loss.

pub mod check;
pub mod solution;
pub mod starter;
crate::yours!("ex06_outbox_relay");

use futures::future::BoxFuture;
use sqlx::AnyPool;
use std::future::Future;

/// The broker as the relay sees it (the checker passes a real Kafka producer that it
/// can also make crash).
pub trait Publish: Send + Sync {
    /// Sends one message and resolves once the broker has acknowledged it: after
    /// `Ok(())` the message is durable on the topic. An `Err` means it may not be.
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        key: &'a str,
        payload: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// What the learner implements (their copy of `starter.rs`) and the reference
/// implements (`solution.rs`).
pub trait OutboxRelay: Send + Sync + 'static {
    fn new(pool: AnyPool) -> Self
    where
        Self: Sized;

    /// Publishes up to `limit` of the oldest unpublished `outbox` rows, in id order,
    /// and marks them published; returns how many were published and marked. Called
    /// in a loop by the relay's run loop (and by the checker).
    fn relay_batch<'a>(
        &'a self,
        publisher: &'a dyn Publish,
        limit: i64,
    ) -> impl Future<Output = anyhow::Result<usize>> + Send + 'a;
}

pub const HINTS: &[&str] = &[
    "Order the two steps so that a crash between them leaves the row *unpublished in the \
     table*. Mark first, crash, and the row is marked but was never sent: lost forever. \
     Publish first, crash, and it is sent but still unmarked: the next relay sends it again — \
     a duplicate, which consumers absorb.",
    "A publish is done when `publisher.publish(..).await` returned Ok — not when you called \
     it. Only rows whose publish returned Ok may be marked. If one fails, stop there: the rows \
     after it keep their order for the next batch.",
    "Mark exactly the ids you published (`UPDATE outbox SET published_at = $1 WHERE id = $2`, \
     per id or with an IN list). Not `WHERE id <= max` and not `WHERE published_at IS NULL`: \
     a transaction that started earlier can commit row 41 while you publish 42, and a range \
     would mark 41 without it ever being sent.",
    "The finished pattern, with batching, leader election and LISTEN/NOTIFY on top, is \
     `Relay::publish_rows` and `mark_published` in phase2-events/src/relay.rs.",
];

pub const EXERCISE: crate::Exercise = crate::Exercise {
    number: 6,
    dir: "ex06_outbox_relay",
    title: "an outbox relay that survives a crash between publish and mark",
    readme: include_str!("README.md"),
    hints: HINTS,
    needs: &[
        crate::infra::Service::Postgres,
        crate::infra::Service::Kafka,
    ],
    check_starter: check::check::<starter::Relay>,
    check_yours: check::check::<yours::Relay>,
    check_solution: check::check::<solution::Relay>,
};
