//! The checker of exercise 2: drives the breaker through its states with a clock the
//! checker controls.

use super::{Breaker, Config, State};
use crate::{Failure, ensure};
use std::time::{Duration, Instant};

const CONFIG: Config = Config {
    failure_threshold: 5,
    cooldown: Duration::from_secs(10),
};

pub fn check<B: Breaker>() -> Result<(), Failure> {
    opens_after_threshold_consecutive_failures::<B>()?;
    a_success_resets_the_run_of_failures::<B>()?;
    half_open_admits_exactly_one_probe::<B>()?;
    a_successful_probe_closes::<B>()?;
    a_failed_probe_reopens_for_a_full_cooldown::<B>()?;
    Ok(())
}

/// A fresh breaker with `n` failed calls recorded at `t0`.
fn with_failures<B: Breaker>(t0: Instant, n: u32) -> Result<B, Failure> {
    let mut breaker = B::new(CONFIG);
    for i in 1..=n {
        ensure(breaker.allow(t0), || {
            format!(
                "a closed breaker refused call {i} after only {} failures (threshold 5)",
                i - 1
            )
        })?;
        breaker.record(t0, false);
    }
    Ok(breaker)
}

fn opens_after_threshold_consecutive_failures<B: Breaker>() -> Result<(), Failure> {
    let t0 = Instant::now();
    let mut breaker = with_failures::<B>(t0, 4)?;
    let state = breaker.state(t0);
    ensure(state == State::Closed, || {
        format!("after 4 failures (threshold 5) the breaker must still be Closed, it is {state:?}")
    })?;
    ensure(breaker.allow(t0), || {
        "after 4 failures (threshold 5) a call was refused".into()
    })?;
    breaker.record(t0, false);
    let state = breaker.state(t0);
    ensure(state == State::Open, || {
        format!(
            "after 5 consecutive failures (threshold 5) the breaker must be Open, it is {state:?}"
        )
    })?;
    let later = t0 + Duration::from_secs(9);
    ensure(!breaker.allow(later), || {
        "9 s into a 10 s cooldown the breaker let a call through; Open must fail fast".into()
    })
}

fn a_success_resets_the_run_of_failures<B: Breaker>() -> Result<(), Failure> {
    let t0 = Instant::now();
    let mut breaker = with_failures::<B>(t0, 4)?;
    ensure(breaker.allow(t0), || {
        "after 4 failures a call was refused".into()
    })?;
    breaker.record(t0, true);
    for _ in 0..4 {
        ensure(breaker.allow(t0), || {
            "4 failures, a success, then more failures: the breaker refused a call although there were never 5 failures in a row — a success must reset the count".into()
        })?;
        breaker.record(t0, false);
    }
    let state = breaker.state(t0);
    ensure(state == State::Closed, || {
        format!(
            "4 failures, a success, then 4 failures is not 5 in a row, but the breaker is \
             {state:?}: a success must reset the count"
        )
    })
}

fn half_open_admits_exactly_one_probe<B: Breaker>() -> Result<(), Failure> {
    let t0 = Instant::now();
    let mut breaker = with_failures::<B>(t0, 5)?;
    let after = t0 + CONFIG.cooldown;
    let state = breaker.state(after);
    ensure(state == State::HalfOpen, || {
        format!(
            "when the 10 s cooldown is over the breaker must report HalfOpen, it reports {state:?}"
        )
    })?;
    ensure(breaker.allow(after), || {
        "the cooldown is over but the breaker refused the probe: an Open breaker that never \
         lets a probe through never recovers"
            .into()
    })?;
    let admitted = (0..20).filter(|_| breaker.allow(after)).count();
    ensure(admitted == 0, || {
        format!(
            "while the probe is in flight the breaker let {admitted} of 20 more callers through; \
             HalfOpen admits exactly one probe"
        )
    })
}

fn a_successful_probe_closes<B: Breaker>() -> Result<(), Failure> {
    let t0 = Instant::now();
    let mut breaker = with_failures::<B>(t0, 5)?;
    let after = t0 + CONFIG.cooldown + Duration::from_millis(1);
    ensure(breaker.allow(after), || {
        "the cooldown is over but the probe was refused".into()
    })?;
    breaker.record(after, true);
    let state = breaker.state(after);
    ensure(state == State::Closed, || {
        format!("the probe succeeded, so the breaker must be Closed, it is {state:?}")
    })?;
    let admitted = (0..10).filter(|_| breaker.allow(after)).count();
    ensure(admitted == 10, || {
        format!("after a successful probe only {admitted} of 10 calls were let through")
    })?;
    // A closed breaker starts counting afresh: 4 failures must not reopen it.
    for _ in 0..4 {
        breaker.record(after, false);
    }
    let state = breaker.state(after);
    ensure(state == State::Closed, || {
        format!(
            "after recovering, 4 failures (threshold 5) reopened the breaker ({state:?}): the \
             failure count must start again from zero"
        )
    })
}

fn a_failed_probe_reopens_for_a_full_cooldown<B: Breaker>() -> Result<(), Failure> {
    let t0 = Instant::now();
    let mut breaker = with_failures::<B>(t0, 5)?;
    let probe_at = t0 + Duration::from_secs(15);
    ensure(breaker.allow(probe_at), || {
        "the cooldown is over but the probe was refused".into()
    })?;
    breaker.record(probe_at, false);
    let state = breaker.state(probe_at);
    ensure(state == State::Open, || {
        format!("the probe failed, so the breaker must be Open again, it is {state:?}")
    })?;
    let nearly = probe_at + Duration::from_secs(9);
    ensure(!breaker.allow(nearly), || {
        "9 s after a failed probe the breaker let a call through: the new cooldown is measured \
         from the probe's failure"
            .into()
    })?;
    let over = probe_at + CONFIG.cooldown;
    ensure(breaker.allow(over), || {
        "10 s after the failed probe the breaker refused the next probe".into()
    })
}
