//! The first errors a newcomer meets, in one line that says what to run.
//!
//! Forgetting `cargo xtask up` is the commonest mistake of a first hour: a phase
//! starts, its database or broker is not there, and the client library retries for
//! many seconds before giving up with words of its own ("pool timed out while waiting
//! for an open connection", "OperationTimedOut (Local: Timed out)"). Every phase
//! takes a quick look first ([`check`]) and fails at once with
//! [`Unreachable`](common_local::endpoints::Unreachable):
//!
//! ```text
//! cannot reach PostgreSQL at 127.0.0.1:5432 (connection refused): start it with `cargo xtask up`
//! ```
//!
//! The message is made in one place (`common_local::endpoints`), so phases 1–4,
//! the test harnesses and `cargo xtask doctor` say it in the same words.

pub use common_local::endpoints::{Endpoint, START, Unreachable};
use std::time::Duration;

/// How long [`check`] waits for each address to accept a connection.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// [`Endpoint::reach`] from async code: `Err` at once when nothing listens at `url`'s
/// address; `Ok` when something does, or when the look proves nothing (no answer
/// within [`PROBE_TIMEOUT`], a Unix socket) and the client should try for itself.
pub async fn check(endpoint: &'static Endpoint, url: &str) -> Result<(), Unreachable> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || endpoint.reach(&url, PROBE_TIMEOUT))
        .await
        .unwrap_or(Ok(()))
}
