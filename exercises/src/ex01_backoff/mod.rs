//! Exercise 1: exponential backoff with full jitter and a deadline.
//!
//! The finished pattern lives in `common/src/resilience/backoff.rs`; this exercise
//! adds the deadline that a real caller also has (the HTTP request it serves will
//! not wait forever).

use std::time::Duration;

pub mod check;
pub mod solution;
pub mod starter;
crate::yours!("ex01_backoff");

/// The retry policy the schedule follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Ceiling of the first delay; doubles after each failed attempt.
    pub base: Duration,
    /// No delay is ever longer than this.
    pub cap: Duration,
    /// Total time budget, measured from the start of the first attempt. No retry may
    /// *start* at or after it.
    pub deadline: Duration,
}

/// What the learner implements (their copy of `starter.rs`) and the reference implements (in
/// `solution.rs`).
pub trait RetrySchedule {
    /// How long to wait after failed attempt `attempt` (0-based) before the next one,
    /// or `None` to give up.
    ///
    /// * `elapsed` — time since the first attempt started (including this failure);
    /// * `random` — a uniform random fraction in `[0, 1)`, supplied by the caller so
    ///   the checker controls randomness (production code would call `rand`).
    fn next_delay(
        &self,
        policy: &Policy,
        attempt: u32,
        elapsed: Duration,
        random: f64,
    ) -> Option<Duration>;
}

pub const HINTS: &[&str] = &[
    "The ceiling after attempt n is min(cap, base * 2^n). Compute 2^n without overflow: \
     `1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX)` and `Duration::saturating_mul`.",
    "Full jitter means the delay is the ceiling times `random`: anywhere in [0, ceiling], \
     not `ceiling` and not `ceiling ± 10 %`. `Duration::mul_f64` does the multiplication.",
    "The deadline: if `elapsed + delay` reaches `policy.deadline`, the retry would start too \
     late, so return `None` instead of sleeping. Use `checked_add` or `saturating_add`.",
    "Compare with `FullJitterBackoff::ceiling` and `Delays::next` in \
     common/src/resilience/backoff.rs.",
];

pub const EXERCISE: crate::Exercise = crate::Exercise {
    number: 1,
    dir: "ex01_backoff",
    title: "exponential backoff with full jitter and a deadline",
    readme: include_str!("README.md"),
    hints: HINTS,
    needs: &[],
    check_starter: || check::check(&starter::Schedule),
    check_yours: || check::check(&yours::Schedule),
    check_solution: || check::check(&solution::Schedule),
};
