//! # FerrisEats terminal dashboard
//!
//! What an instructor puts on the projector: the health of every service, orders per
//! second, payment p50/p95/p99 over a sliding window, error and dead-letter rates,
//! consumer lag per group and partition with its trend, outbox backlog, breaker
//! states and the planned incidents — with a key to switch each incident, and a log
//! of what changed.
//!
//! ## Layout
//!
//! | module     | what it does                                                               |
//! |------------|----------------------------------------------------------------------------|
//! | [`config`] | targets (`--target NAME=URL`, `FERRISEATS_TARGETS`), refresh, window       |
//! | [`poll`]   | async polling of `/health`, `/ready`, `/metrics`, `/admin/incidents` into a [`poll::Snapshot`], with timeouts |
//! | [`model`]  | the state: rates from counters, percentiles over a window, lag trends, the event log — pure, fed timestamps |
//! | [`ui`]     | the panels, pure functions of the model (ratatui widgets)                  |
//! | [`app`]    | the event loop: keys → actions, snapshots in, switches out                 |
//! | [`text`]   | `--once`: the same panels as plain text                                    |
//!
//! Parsing `/metrics` and `histogram_quantile` are phase 3's
//! ([`phase3_observability::scrape`]): the dashboard reads the system exactly as
//! phase 3's own tests do.

pub mod app;
pub mod config;
pub mod model;
pub mod poll;
pub mod text;
pub mod ui;
