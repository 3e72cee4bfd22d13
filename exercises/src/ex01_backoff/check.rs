//! The checker of exercise 1: what "solved" means, tested on behaviour.

use super::{Policy, RetrySchedule};
use crate::{CheckRng, Failure, ensure};
use std::time::Duration;

const POLICY: Policy = Policy {
    base: Duration::from_millis(100),
    cap: Duration::from_secs(2),
    deadline: Duration::from_secs(10),
};

/// A budget so large it never interferes with the checks that are not about it.
const NO_DEADLINE: Policy = Policy {
    deadline: Duration::from_secs(1_000_000),
    ..POLICY
};

pub fn check(schedule: &dyn RetrySchedule) -> Result<(), Failure> {
    ceilings_grow_exponentially_up_to_the_cap(schedule)?;
    delays_are_uniform_over_the_whole_interval(schedule)?;
    huge_attempt_numbers_stay_at_the_cap(schedule)?;
    the_deadline_is_never_overrun(schedule)?;
    Ok(())
}

fn ceilings_grow_exponentially_up_to_the_cap(s: &dyn RetrySchedule) -> Result<(), Failure> {
    // With random ≈ 1 the delay is (almost) the ceiling itself.
    for (attempt, expected_ms) in [
        (0u32, 100u128),
        (1, 200),
        (2, 400),
        (3, 800),
        (4, 1600),
        (5, 2000),
        (9, 2000),
    ] {
        let delay = s.next_delay(&NO_DEADLINE, attempt, Duration::ZERO, 0.999_999);
        let Some(delay) = delay else {
            return Err(Failure(format!(
                "attempt {attempt} gave up (None) although the deadline is far away"
            )));
        };
        let ms = delay.as_millis();
        ensure(ms + 1 >= expected_ms && ms <= expected_ms, || {
            format!(
                "after attempt {attempt} with base 100 ms and cap 2 s, random ≈ 1 must give a \
                 delay of about {expected_ms} ms (min(cap, base·2^{attempt})), got {ms} ms"
            )
        })?;
    }
    Ok(())
}

fn delays_are_uniform_over_the_whole_interval(s: &dyn RetrySchedule) -> Result<(), Failure> {
    let attempt = 3;
    let ceiling = Duration::from_millis(800);
    let mut rng = CheckRng::new(0x0FE5_51E5);
    let samples: Vec<Duration> = (0..200)
        .map(|_| s.next_delay(&NO_DEADLINE, attempt, Duration::ZERO, rng.fraction()))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            Failure::new("attempt 3 gave up (None) although the deadline is far away")
        })?;
    if let Some(too_long) = samples.iter().find(|d| **d > ceiling) {
        return Err(Failure(format!(
            "attempt 3 waited {} ms, above its ceiling min(cap, base·2³) = 800 ms",
            too_long.as_millis()
        )));
    }
    let distinct: std::collections::BTreeSet<_> = samples.iter().collect();
    ensure(distinct.len() > 190, || {
        format!(
            "attempt 3 waited {} ms; with full jitter it must be uniformly random in [0, 800 ms]: \
             200 samples gave only {} distinct delays, so clients that failed together retry together",
            samples[0].as_millis(),
            distinct.len()
        )
    })?;
    let mean_ms = samples
        .iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .sum::<f64>()
        / 200.0;
    ensure((300.0..=500.0).contains(&mean_ms), || {
        format!(
            "full jitter over [0, 800 ms] averages about 400 ms, but 200 delays after attempt 3 \
             averaged {mean_ms:.0} ms: the jitter does not span the whole interval \
             (\"equal jitter\" or ±10 % is not full jitter)"
        )
    })?;
    let below_tenth = samples.iter().filter(|d| **d < ceiling / 10).count();
    ensure(below_tenth >= 5, || {
        format!(
            "only {below_tenth} of 200 delays after attempt 3 were below 80 ms; full jitter must \
             reach down to zero"
        )
    })
}

fn huge_attempt_numbers_stay_at_the_cap(s: &dyn RetrySchedule) -> Result<(), Failure> {
    for attempt in [31u32, 32, 64, 1000] {
        let delay = s.next_delay(&NO_DEADLINE, attempt, Duration::ZERO, 0.999_999);
        ensure(
            matches!(delay, Some(d) if d <= POLICY.cap && d >= POLICY.cap / 2),
            || {
                format!(
                    "attempt {attempt} must wait (almost) the cap of 2 s with random ≈ 1, got {delay:?}: \
                 compute base·2^n without overflowing"
                )
            },
        )?;
    }
    Ok(())
}

fn the_deadline_is_never_overrun(s: &dyn RetrySchedule) -> Result<(), Failure> {
    // Simulate a caller: each attempt takes 150 ms and fails; we sleep what the
    // schedule says and try again until it gives up.
    let mut rng = CheckRng::new(42);
    for run in 0..50 {
        let mut elapsed = Duration::ZERO;
        let mut attempt = 0u32;
        loop {
            elapsed += Duration::from_millis(150);
            let Some(delay) = s.next_delay(&POLICY, attempt, elapsed, rng.fraction()) else {
                break;
            };
            let next_start = elapsed + delay;
            ensure(next_start < POLICY.deadline, || {
                format!(
                    "run {run}: after attempt {attempt} at {} ms the schedule waited {} ms, so the \
                     next attempt would start at {} ms — at or past the 10 s deadline; return None \
                     instead",
                    elapsed.as_millis(),
                    delay.as_millis(),
                    next_start.as_millis()
                )
            })?;
            elapsed = next_start;
            attempt += 1;
            ensure(attempt < 10_000, || {
                "the schedule never gave up: 10 000 retries within a 10 s deadline".to_string()
            })?;
        }
    }
    // And once the budget is spent, no retry at all, even with a zero delay.
    let at_deadline = s.next_delay(&POLICY, 2, POLICY.deadline, 0.0);
    ensure(at_deadline.is_none(), || {
        format!(
            "with the 10 s deadline already reached, the schedule still retried ({at_deadline:?})"
        )
    })
}
