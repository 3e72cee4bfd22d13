// Exercise 1: your implementation.
//
// `cargo run -p exercises -- start 1` copies this starter to `exercises/mine/ex01_backoff.rs`;
// edit that copy (this file stays as shipped), then `cargo run -p exercises -- check 1`.

use super::{Policy, RetrySchedule};
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default)]
pub struct Schedule;

impl RetrySchedule for Schedule {
    fn next_delay(
        &self,
        policy: &Policy,
        attempt: u32,
        elapsed: Duration,
        random: f64,
    ) -> Option<Duration> {
        // TODO(exercise): this overflows for large attempts and ignores the cap.
        let ceiling = policy.base * 2u32.pow(attempt);
        // TODO(exercise): full jitter — the delay must be random in [0, ceiling].
        let _ = random;
        let delay = ceiling;
        // TODO(exercise): give up (None) when the retry would start at or after the deadline.
        let _ = elapsed;
        Some(delay)
    }
}
