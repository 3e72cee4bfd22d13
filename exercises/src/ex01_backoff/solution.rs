//! Reference solution of exercise 1. Learners edit `starter.rs`, not this file.

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
        // 2^attempt saturates instead of overflowing: attempt 1000 just means "the cap".
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let ceiling = policy.base.saturating_mul(factor).min(policy.cap);
        // Full jitter: anywhere in [0, ceiling], so clients that failed together
        // retry apart.
        let delay = ceiling.mul_f64(random.clamp(0.0, 1.0));
        // A retry that would start at or after the deadline is pointless: the caller
        // has already given up on us.
        match elapsed.checked_add(delay) {
            Some(start) if start < policy.deadline => Some(delay),
            _ => None,
        }
    }
}
