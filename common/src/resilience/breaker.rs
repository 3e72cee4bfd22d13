//! A circuit breaker: stop calling a dependency that is failing, so that callers fail
//! fast instead of queueing behind timeouts, and the dependency gets room to recover.
//!
//! ```text
//!            failure rate ≥ threshold
//!  ┌────────┐  over the last `window` calls  ┌──────┐
//!  │ Closed │ ─────────────────────────────▶ │ Open │ ◀──┐ probe fails
//!  └────────┘                                └──────┘    │
//!      ▲                           cooldown over │       │
//!      │          probe succeeds            ┌────▼─────┐ │
//!      └─────────────────────────────────── │ HalfOpen │─┘
//!                                           └──────────┘
//! ```
//!
//! * **Closed** — calls go through; the outcome of each is remembered in a sliding
//!   window of the last `window` calls. We trip on a failure *rate* rather than on N
//!   consecutive failures: with 30 % random failures and many concurrent callers, five
//!   failures in a row happen all the time, but 70 % of 20 calls do not.
//! * **Open** — calls are refused at once with [`BreakerOpen`] (no network traffic at
//!   all) until `cooldown` has passed.
//! * **HalfOpen** — exactly one caller is let through as a probe. Its success closes
//!   the breaker; its failure opens it for another cooldown.
//!
//! A call is represented by a [`Permit`]. Dropping a permit without reporting an
//! outcome (the caller's future was cancelled by a deadline) counts as a failure, so
//! a lost probe can never wedge the breaker in HalfOpen. Every state change starts a
//! new *generation*, and a permit reports into the generation it was granted in: a
//! slow call that started before the breaker tripped (or before it recovered) cannot
//! distort the verdict about the dependency as it is now.
//!
//! Time comes from `tokio::time::Instant`, so tests can pause and advance the clock.

use serde::Serialize;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Logged at every state change (`breaker`, `from`, `to`). Phase 3 turns it into the
/// `circuit_breaker_state` gauge, matching on this constant, not on its wording.
pub const LOG_STATE_CHANGED: &str = "circuit breaker state change";

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// How many recent calls the failure rate is computed over.
    pub window: usize,
    /// No verdict before this many calls: two failures out of two is not a trend.
    pub min_calls: usize,
    /// Failure rate (0..=1) at or above which the breaker opens.
    pub failure_threshold: f64,
    /// How long to refuse calls before letting a probe through.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: 20,
            min_calls: 10,
            failure_threshold: 0.7,
            cooldown: Duration::from_secs(10),
        }
    }
}

/// The publicly visible state (for `/ready`, logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        })
    }
}

/// Returned instead of a permit while the breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker {name} is open; retry in {retry_after:?}")]
pub struct BreakerOpen {
    pub name: &'static str,
    pub retry_after: Duration,
}

#[derive(Debug)]
enum State {
    /// `true` = failure, most recent last.
    Closed {
        recent: VecDeque<bool>,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        probe_in_flight: bool,
    },
}

/// A circuit breaker shared by every caller of one dependency.
#[derive(Debug)]
pub struct CircuitBreaker {
    name: &'static str,
    config: BreakerConfig,
    // A std Mutex: the critical sections are a few instructions and never await.
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Incremented on every state change; permits remember the one they were granted in.
    generation: u64,
}

/// Permission to make one call. Report the outcome with [`Permit::success`] or
/// [`Permit::failure`]; dropping it unreported counts as a failure.
#[must_use = "report the outcome of the call, or it counts as a failure"]
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<CircuitBreaker>,
    generation: u64,
    reported: bool,
}

impl CircuitBreaker {
    pub fn new(name: &'static str, config: BreakerConfig) -> Arc<Self> {
        Arc::new(CircuitBreaker {
            name,
            config,
            inner: Mutex::new(Inner {
                state: State::Closed {
                    recent: VecDeque::with_capacity(config.window),
                },
                generation: 0,
            }),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The current state. An open breaker whose cooldown has passed reports
    /// `HalfOpen`: the next caller will be the probe.
    pub fn state(&self) -> BreakerState {
        match &self.lock().state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() < *until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to make a call.
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, BreakerOpen> {
        let mut inner = self.lock();
        match &mut inner.state {
            State::Closed { .. } => {}
            State::Open { until } => {
                let now = Instant::now();
                if now < *until {
                    return Err(self.open_error(*until - now));
                }
                // Cooldown over: this caller becomes the probe.
                self.transition(
                    &mut inner,
                    State::HalfOpen {
                        probe_in_flight: true,
                    },
                );
            }
            State::HalfOpen { probe_in_flight } => {
                if *probe_in_flight {
                    return Err(self.open_error(Duration::ZERO));
                }
                *probe_in_flight = true;
            }
        }
        Ok(Permit {
            breaker: Arc::clone(self),
            generation: inner.generation,
            reported: false,
        })
    }

    fn record(&self, generation: u64, failed: bool) {
        let mut inner = self.lock();
        if generation != inner.generation {
            // Granted before the last state change (e.g. a slow call that started
            // before the breaker tripped): says nothing about the dependency *now*.
            return;
        }
        match &mut inner.state {
            State::Closed { recent } => {
                recent.push_back(failed);
                if recent.len() > self.config.window {
                    recent.pop_front();
                }
                let failures = recent.iter().filter(|f| **f).count();
                let rate = failures as f64 / recent.len() as f64;
                if recent.len() >= self.config.min_calls && rate >= self.config.failure_threshold {
                    tracing::warn!(
                        breaker = self.name,
                        failures,
                        calls = recent.len(),
                        "failure rate over threshold; opening circuit"
                    );
                    let until = Instant::now() + self.config.cooldown;
                    self.transition(&mut inner, State::Open { until });
                }
            }
            // The only permit of a half-open generation is the probe's.
            State::HalfOpen { .. } => {
                let next = if failed {
                    State::Open {
                        until: Instant::now() + self.config.cooldown,
                    }
                } else {
                    State::Closed {
                        recent: VecDeque::with_capacity(self.config.window),
                    }
                };
                self.transition(&mut inner, next);
            }
            // No permit is ever granted into an open generation.
            State::Open { .. } => {}
        }
    }

    fn transition(&self, inner: &mut Inner, next: State) {
        let from = describe(&inner.state);
        inner.state = next;
        inner.generation += 1;
        let to = describe(&inner.state);
        tracing::info!(breaker = self.name, from, to, "{}", LOG_STATE_CHANGED);
    }

    fn open_error(&self, retry_after: Duration) -> BreakerOpen {
        BreakerOpen {
            name: self.name,
            retry_after,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state is always valid between statements, so a panic elsewhere while
        // holding the lock cannot leave it half-updated: recover from poisoning.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn describe(state: &State) -> &'static str {
    match state {
        State::Closed { .. } => "closed",
        State::Open { .. } => "open",
        State::HalfOpen { .. } => "half_open",
    }
}

impl Permit {
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.record(self.generation, false);
    }

    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.record(self.generation, true);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.record(self.generation, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Arc<CircuitBreaker> {
        CircuitBreaker::new(
            "test",
            BreakerConfig {
                window: 10,
                min_calls: 4,
                failure_threshold: 0.5,
                cooldown: Duration::from_secs(5),
            },
        )
    }

    fn fail(b: &Arc<CircuitBreaker>, n: usize) {
        for _ in 0..n {
            b.try_acquire().unwrap().failure();
        }
    }

    fn succeed(b: &Arc<CircuitBreaker>, n: usize) {
        for _ in 0..n {
            b.try_acquire().unwrap().success();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stays_closed_until_enough_calls_have_been_seen() {
        let b = breaker();
        fail(&b, 3);
        assert_eq!(b.state(), BreakerState::Closed, "3 calls < min_calls");
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_failure_rate_not_on_isolated_failures() {
        let b = breaker();
        for _ in 0..10 {
            succeed(&b, 2);
            fail(&b, 1); // 33 % failures: below the 50 % threshold
        }
        assert_eq!(b.state(), BreakerState::Closed);
        // The window now holds 4 failures in 10; one more is 5/10 = 50 %.
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Closed, "4 of 10 still below");
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_fails_fast_until_the_cooldown_passes() {
        let b = breaker();
        fail(&b, 4);
        let err = b.try_acquire().unwrap_err();
        assert_eq!(err.retry_after, Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(b.try_acquire().is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_exactly_one_probe_through() {
        let b = breaker();
        fail(&b, 4);
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = b.try_acquire().expect("the first caller is the probe");
        assert!(
            b.try_acquire().is_err(),
            "a second caller must wait for the probe"
        );
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
        succeed(&b, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_a_full_cooldown() {
        let b = breaker();
        fail(&b, 4);
        tokio::time::advance(Duration::from_secs(5)).await;
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(
            b.try_acquire().unwrap_err().retry_after,
            Duration::from_secs(5)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_counts_as_failure_and_does_not_wedge_the_breaker() {
        let b = breaker();
        fail(&b, 4);
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(b.try_acquire().unwrap()); // e.g. the caller's deadline cancelled it
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        b.try_acquire().unwrap().success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn late_reports_from_before_the_trip_are_ignored() {
        let b = breaker();
        let slow_call = b.try_acquire().unwrap();
        fail(&b, 4);
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = b.try_acquire().unwrap();
        slow_call.success(); // must not close the breaker on the probe's behalf
        assert_eq!(b.state(), BreakerState::HalfOpen);
        probe.failure();
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn reports_from_before_a_full_open_close_cycle_are_ignored() {
        let b = breaker();
        let ancient: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
        fail(&b, 4);
        tokio::time::advance(Duration::from_secs(5)).await;
        b.try_acquire().unwrap().success(); // closed again, empty window
        fail(&b, 1);
        for permit in ancient {
            permit.failure(); // would make 4 failures of 4 if counted
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_forgets_the_old_failures() {
        let b = breaker();
        fail(&b, 4);
        tokio::time::advance(Duration::from_secs(5)).await;
        b.try_acquire().unwrap().success();
        fail(&b, 3);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "the window restarted empty"
        );
    }
}
