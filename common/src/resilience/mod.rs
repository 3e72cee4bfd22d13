//! Resilience building blocks, each small enough to read in one sitting.
//!
//! - [`backoff`]: *when* to retry — exponential backoff with full jitter. The retry
//!   loop itself comes from the `backon` crate; this module only supplies the delays.
//! - [`breaker`]: *whether* to call at all — a circuit breaker's state machine.
//!
//! Timeouts need no module: the HTTP client's per-request timeout bounds one attempt,
//! and `tokio::time::timeout` around the whole retry loop is the overall deadline
//! (see `payment::client`).

pub mod backoff;
pub mod breaker;

pub use backoff::FullJitterBackoff;
pub use breaker::{BreakerConfig, BreakerOpen, BreakerState, CircuitBreaker, Permit};
