//! # FerrisEats phase 4: load and chaos
//!
//! Phase 4 puts the platform under 500–1000+ requests per second with faults injected,
//! and checks that nothing accepted is lost, that it recovers without a human and that
//! no failure cascades. This crate starts with what every one of those lessons stands
//! on: generating load honestly and measuring what comes out.
//!
//! | module | what it holds |
//! |---|---|
//! | [`load`] | the closed- and open-model HTTP load generators, HDR latency histograms |
//! | [`pgbench`] | PostgreSQL's own benchmark running one order's SQL: the database's ceiling |
//! | [`gateway`] | the only door for clients: JWT authentication, GCRA rate limits in Redis, forwarding to the order API |
//! | [`bench`] | `cargo xtask bench phase1\|phase2\|phase3`: the benchmarks, the end-to-end observer, queue and CPU sampling, the reports |
//!
//! The binary (`phase4-chaos bench …`, what `cargo xtask bench` runs) only parses
//! the command line and calls [`bench::run`].

pub mod bench;
pub mod gateway;
pub mod load;
pub mod pgbench;
pub mod system;
