//! Exercise 7: routing a poison message to the dead-letter topic, with its reason.
//!
//! A poison message is one that will never be processed: bytes that are not an
//! envelope, an envelope whose payload is not what its type promises, an empty
//! message. A consumer that fails on it and does not commit reads it again after the
//! restart, and again — the partition is blocked, and every order behind it waits.
//! A consumer that silently skips it loses data that was accepted. The answer is the
//! dead-letter topic: set it aside *with the reason and where it came from*, commit,
//! and go on; an operator fixes the cause and replays it (`phase2-events dlq replay`).

pub mod check;
pub mod solution;
pub mod starter;
crate::yours!("ex07_poison_message");

use futures::future::BoxFuture;
pub use phase2_events::consumer::HandleError;
pub use phase2_events::events::Envelope;
use std::future::Future;

/// One message as the consumer read it from the topic.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a str>,
    /// `None`: an empty message (a tombstone, a broken producer).
    pub payload: Option<&'a [u8]>,
}

/// What became of a message; after `Ok(_)` the consumer commits past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// The event was applied.
    Handled,
    /// It was published to the dead-letter topic.
    DeadLettered,
}

/// The service's business logic (the checker's: an order service that needs a
/// readable `OrderPlaced` payload).
pub trait Apply: Send + Sync {
    fn apply<'a>(&'a self, event: &'a Envelope) -> BoxFuture<'a, Result<(), HandleError>>;
}

/// A real Kafka producer: resolves once the broker acknowledged the message.
pub trait Publish: Send + Sync {
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        key: Option<&'a str>,
        payload: Option<&'a [u8]>,
        headers: &'a [(&'a str, String)],
    ) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// What the learner implements (their copy of `starter.rs`) and the reference
/// implements (`solution.rs`).
pub trait PoisonRouter: Send + Sync + 'static {
    fn new() -> Self
    where
        Self: Sized;

    /// Handles one message. `Err` means "could not handle it now": the consumer
    /// crashes, restarts and reads the same message again.
    fn route<'a>(
        &'a self,
        message: Incoming<'a>,
        apply: &'a dyn Apply,
        publish: &'a dyn Publish,
    ) -> impl Future<Output = anyhow::Result<Routed>> + Send + 'a;
}

pub const HINTS: &[&str] = &[
    "Returning `Err` for a message that can never succeed makes the consumer read it again \
     after the restart, forever: the partition is blocked. Decide *permanent* failures \
     yourself instead of propagating them with `?`.",
    "Three kinds are permanent here: no payload at all, a payload that is not an `Envelope` \
     (`serde_json::from_slice` fails), and `apply` answering `HandleError::Permanent`. \
     A `HandleError::Transient` is not poison: return `Err` and let it be retried.",
    "Publish a permanent failure to `<topic>.dlq` with the *same key and payload* (so it can be \
     replayed byte for byte) and headers `dlq_reason` (the error's own text — \"bad message\" \
     helps nobody at 3 a.m.), `dlq_source_topic`, `dlq_source_partition` and \
     `dlq_source_offset`. Only then return `Ok(Routed::DeadLettered)`.",
    "The finished pattern is `EventConsumer::process` in phase2-events/src/consumer.rs; \
     `phase2-events dlq list` and `dlq replay` (src/dlq.rs) read exactly those headers.",
];

pub const EXERCISE: crate::Exercise = crate::Exercise {
    number: 7,
    dir: "ex07_poison_message",
    title: "routing a poison message to the dead-letter topic with its reason",
    readme: include_str!("README.md"),
    hints: HINTS,
    needs: &[crate::infra::Service::Kafka],
    check_starter: check::check::<starter::Router>,
    check_yours: check::check::<yours::Router>,
    check_solution: check::check::<solution::Router>,
};
