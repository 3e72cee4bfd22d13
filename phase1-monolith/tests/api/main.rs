//! Phase 1 API tests. Every test runs twice — `sqlite::…` and `postgres::…` — against
//! a real database and the payment provider simulator over real HTTP.
//!
//! Run with `cargo xtask test`, or `cargo test -p phase1-monolith --test api` once
//! PostgreSQL is up (`cargo xtask up`).

#[path = "../support/mod.rs"]
mod support;

mod idempotency;
mod in_process;
mod orders;
mod reconciliation;
mod resilience;
mod validation;
