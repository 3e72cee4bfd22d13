//! Exponential backoff with *full jitter*.
//!
//! After failed attempt `n` (0-based) we wait a random time in
//! `[0, min(cap, base · 2ⁿ)]`. The exponential part spreads retries out as the
//! outage lasts; the jitter is what keeps a thousand clients that failed at the same
//! moment from retrying at the same moment (a "thundering herd" that knocks the
//! recovering service over again). Full jitter — the whole interval, not ±10 % —
//! spreads them best (see the AWS Architecture Blog, "Exponential Backoff And Jitter").
//!
//! [`FullJitterBackoff`] implements `backon::BackoffBuilder`, so it plugs straight
//! into `backon`'s retry loop: `operation.retry(backoff).when(is_retryable)`.

use std::time::Duration;

/// A retry schedule: at most `max_retries` delays, each drawn with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullJitterBackoff {
    /// Ceiling of the first delay; doubles after each failure.
    pub base: Duration,
    /// No delay is ever longer than this, however many attempts failed.
    pub cap: Duration,
    /// Retries after the first attempt (so `max_retries + 1` attempts in total).
    pub max_retries: u32,
}

impl FullJitterBackoff {
    /// The upper bound of the delay after failed attempt `n` (0-based): `min(cap, base·2ⁿ)`.
    pub fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delays as an iterator, drawing jitter from `jitter` (a function returning a
    /// number in `[0, 1]`). Tests pass a fixed function; production uses [`rand`].
    pub fn delays_with(self, jitter: impl FnMut() -> f64) -> Delays<impl FnMut() -> f64> {
        Delays {
            policy: self,
            attempt: 0,
            jitter,
        }
    }
}

/// The iterator of delays produced by [`FullJitterBackoff`].
#[derive(Debug)]
pub struct Delays<J> {
    policy: FullJitterBackoff,
    attempt: u32,
    jitter: J,
}

impl<J: FnMut() -> f64> Iterator for Delays<J> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.attempt >= self.policy.max_retries {
            return None;
        }
        let ceiling = self.policy.ceiling(self.attempt);
        self.attempt += 1;
        let fraction = (self.jitter)().clamp(0.0, 1.0);
        Some(ceiling.mul_f64(fraction))
    }
}

fn random_fraction() -> f64 {
    rand::random::<f64>()
}

impl backon::BackoffBuilder for FullJitterBackoff {
    type Backoff = Delays<fn() -> f64>;

    fn build(self) -> Self::Backoff {
        Delays {
            policy: self,
            attempt: 0,
            jitter: random_fraction,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backon::BackoffBuilder;
    use proptest::prelude::*;

    const POLICY: FullJitterBackoff = FullJitterBackoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(2),
        max_retries: 6,
    };

    #[test]
    fn ceilings_double_until_the_cap() {
        let ceilings: Vec<_> = (0..7).map(|n| POLICY.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000]);
    }

    #[test]
    fn the_schedule_yields_exactly_max_retries_delays() {
        assert_eq!(POLICY.build().count(), 6);
        let none = FullJitterBackoff {
            max_retries: 0,
            ..POLICY
        };
        assert_eq!(none.build().count(), 0);
    }

    #[test]
    fn full_jitter_spans_the_whole_interval() {
        let lowest: Vec<_> = POLICY.delays_with(|| 0.0).collect();
        assert!(
            lowest.iter().all(|d| d.is_zero()),
            "jitter 0 means retry at once"
        );
        let highest: Vec<_> = POLICY.delays_with(|| 1.0).map(|d| d.as_millis()).collect();
        assert_eq!(highest, [100, 200, 400, 800, 1600, 2000]);
    }

    #[test]
    fn jitter_actually_varies_between_clients() {
        // Two clients that failed together must not retry together: over 200 draws
        // of the first delay, practically all values differ.
        let draws: std::collections::BTreeSet<_> =
            (0..200).map(|_| POLICY.build().next().unwrap()).collect();
        assert!(draws.len() > 190, "only {} distinct delays", draws.len());
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        assert_eq!(POLICY.ceiling(1000), POLICY.cap);
    }

    proptest! {
        #[test]
        fn every_delay_lies_within_zero_and_its_ceiling(
            base_ms in 1u64..1_000, cap_ms in 1u64..60_000, retries in 0u32..40,
        ) {
            let policy = FullJitterBackoff {
                base: Duration::from_millis(base_ms),
                cap: Duration::from_millis(cap_ms),
                max_retries: retries,
            };
            for (n, delay) in policy.build().enumerate() {
                prop_assert!(delay <= policy.ceiling(n as u32));
                prop_assert!(delay <= policy.cap);
            }
        }
    }
}
