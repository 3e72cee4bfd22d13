// Exercise 2: your implementation.
//
// `cargo run -p exercises -- start 2` copies this starter to `exercises/mine/ex02_breaker.rs`;
// edit that copy (this file stays as shipped), then `cargo run -p exercises -- check 2`.

use super::{Breaker, Config, State};
use std::time::Instant;

#[derive(Debug)]
pub struct CircuitBreaker {
    config: Config,
    consecutive_failures: u32,
    /// `Some(until)` while Open.
    open_until: Option<Instant>,
}

impl Breaker for CircuitBreaker {
    fn new(config: Config) -> Self {
        CircuitBreaker {
            config,
            consecutive_failures: 0,
            open_until: None,
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let _ = now;
        // TODO(exercise): once the cooldown is over, admit exactly one probe (HalfOpen).
        self.open_until.is_none()
    }

    fn record(&mut self, now: Instant, success: bool) {
        if success {
            // TODO(exercise): a success should reset the run of failures (and close a
            // HalfOpen breaker).
            return;
        }
        self.consecutive_failures += 1;
        if self.consecutive_failures >= self.config.failure_threshold {
            self.open_until = Some(now + self.config.cooldown);
        }
    }

    fn state(&self, now: Instant) -> State {
        let _ = now;
        // TODO(exercise): report HalfOpen once the cooldown has passed.
        match self.open_until {
            Some(_) => State::Open,
            None => State::Closed,
        }
    }
}
