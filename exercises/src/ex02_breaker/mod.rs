//! Exercise 2: a circuit breaker state machine.
//!
//! Simpler than `common/src/resilience/breaker.rs` (consecutive failures instead of a
//! failure rate, no permits), but the same three states and the same rule for
//! HalfOpen: exactly one probe. Time is passed in as `Instant`s, so the checker
//! controls the clock and needs no sleeping.

use std::time::{Duration, Instant};

pub mod check;
pub mod solution;
pub mod starter;
crate::yours!("ex02_breaker");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// This many failures *in a row* while Closed open the breaker.
    pub failure_threshold: u32,
    /// How long the breaker stays Open before it lets one probe through.
    pub cooldown: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

/// What the learner implements (their copy of `starter.rs`) and the reference implements (in
/// `solution.rs`).
pub trait Breaker {
    fn new(config: Config) -> Self
    where
        Self: Sized;

    /// May a call go out at `now`? While HalfOpen this admits exactly one probe: the
    /// first caller gets `true`, everyone else `false` until the probe is recorded.
    fn allow(&mut self, now: Instant) -> bool;

    /// The outcome of a call that `allow` admitted.
    fn record(&mut self, now: Instant, success: bool);

    /// The state at `now` (an Open breaker whose cooldown has passed is HalfOpen).
    fn state(&self, now: Instant) -> State;
}

pub const HINTS: &[&str] = &[
    "A success while Closed resets the count of consecutive failures: 4 failures, a \
     success, 4 failures is not 5 in a row.",
    "Open remembers *until when*. In `allow`, once `now >= until`, move to HalfOpen and \
     let exactly this one caller through (remember that a probe is in flight).",
    "HalfOpen: the probe's success closes the breaker (and resets the count); its failure \
     opens it again for a full cooldown measured from the probe's failure, not from the \
     first opening.",
    "`state(now)` must not mutate: report HalfOpen for an Open breaker whose cooldown has \
     passed. Compare with `CircuitBreaker::state` in common/src/resilience/breaker.rs.",
];

pub const EXERCISE: crate::Exercise = crate::Exercise {
    number: 2,
    dir: "ex02_breaker",
    title: "a circuit breaker state machine",
    readme: include_str!("README.md"),
    hints: HINTS,
    needs: &[],
    check_starter: check::check::<starter::CircuitBreaker>,
    check_yours: check::check::<yours::CircuitBreaker>,
    check_solution: check::check::<solution::CircuitBreaker>,
};
