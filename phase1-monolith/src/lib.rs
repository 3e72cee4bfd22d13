//! # FerrisEats phase 1 — the resilient monolith
//!
//! One process, one database, one external dependency (the payment provider), and
//! every way a payment can go wrong.
//!
//! ## Layout
//!
//! | module          | what it shows                                                       |
//! |-----------------|---------------------------------------------------------------------|
//! | [`orders`]      | the API; persist → pay → settle → answer                            |
//! | [`store`]       | orders in SQL; insert before paying; optimistic status updates      |
//! | [`idempotency`] | `Idempotency-Key`: claim, fingerprint, save and replay the response |
//! | [`workflow`]    | turning a payment outcome into an order status                      |
//! | [`reconciler`]  | settling in-doubt orders by asking the provider                      |
//! | [`health`]      | liveness vs readiness                                               |
//! | [`config`]      | flags and environment variables                                     |
//! | [`startup`]     | build, bind, migrate, serve, shut down                              |
//!
//! The mechanisms it uses — backoff, circuit breaker, the resilient payment client and
//! the provider simulator, problem+json errors, request-id logging — live in
//! [`common`], because later phases reuse them.

pub mod config;
pub mod health;
pub mod idempotency;
pub mod orders;
pub mod reconciler;
pub mod startup;
pub mod store;
pub mod workflow;
