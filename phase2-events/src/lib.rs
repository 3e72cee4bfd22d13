//! # FerrisEats phase 2 — event-driven services over Kafka
//!
//! Work in progress: the building blocks come first.
//!
//! ## Layout
//!
//! | module       | what it shows                                                      |
//! |--------------|--------------------------------------------------------------------|
//! | [`events`]   | the event envelope: ids, partition key, correlation and causation  |
//! | [`kafka`]    | producer and admin settings, each with its reason                  |
//! | [`outbox`]   | the transactional outbox: no dual write                            |
//! | [`relay`]    | outbox → Kafka, at least once, one leader, marked by id            |
//! | [`consumer`] | at-least-once, idempotent consumer; retry and dead-letter topics   |
//! | [`dlq`]      | list and replay dead letters                                       |

pub mod consumer;
pub mod dlq;
pub mod events;
pub mod kafka;
pub mod outbox;
pub mod relay;
