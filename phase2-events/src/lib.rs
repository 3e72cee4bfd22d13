//! # FerrisEats phase 2 — event-driven services over Kafka
//!
//! The monolith of phase 1 split into services that talk only through events, with
//! every guarantee made explicit: no dual writes (outbox), at-least-once delivery made
//! effectively-once (idempotent consumers), retries that do not block a partition,
//! poison messages parked with their reason, and a saga with compensation instead of
//! a distributed transaction.
//!
//! ## Layout
//!
//! | module       | what it shows                                                      |
//! |--------------|--------------------------------------------------------------------|
//! | [`flow`]     | the event flow: topics, event types, payloads, the saga in a table |
//! | [`events`]   | the event envelope: ids, partition key, correlation and causation  |
//! | [`kafka`]    | producer and admin settings, each with its reason                  |
//! | [`outbox`]   | the transactional outbox: no dual write                            |
//! | [`relay`]    | outbox → Kafka, at least once, one leader, marked by id            |
//! | [`consumer`] | at-least-once, idempotent consumer; retry and dead-letter topics   |
//! | [`dlq`]      | list and replay dead letters                                       |
//! | [`fault_proxy`] | a TCP proxy that injects latency and partitions (chaos scenarios) |
//! | [`services`] | order (API + saga), payment, inventory, notification, delivery     |
//! | [`system`]   | relays, the provider simulator, everything in one process          |
//! | [`config`]   | flags and environment variables                                    |
//! | [`books`]    | the no-loss checker's rules: orders, charges, stock, notifications, outboxes |
//! | `testing`    | the test harness of phases 2–4 and the checker over it (feature `testing`) |

pub mod books;
pub mod config;
pub mod consumer;
pub mod dlq;
pub mod events;
pub mod fault_proxy;
pub mod flow;
pub mod kafka;
pub mod outbox;
pub mod relay;
pub mod services;
pub mod system;
#[cfg(feature = "testing")]
pub mod testing;
