//! Reference solution of exercise 2. Learners edit `starter.rs`, not this file.

use super::{Breaker, Config, State};
use std::time::Instant;

#[derive(Debug)]
pub struct CircuitBreaker {
    config: Config,
    state: Inner,
}

#[derive(Debug, Clone, Copy)]
enum Inner {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        until: Instant,
    },
    /// `probe_in_flight`: the one caller let through has not reported yet.
    HalfOpen {
        probe_in_flight: bool,
    },
}

impl Breaker for CircuitBreaker {
    fn new(config: Config) -> Self {
        CircuitBreaker {
            config,
            state: Inner::Closed {
                consecutive_failures: 0,
            },
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            Inner::Closed { .. } => true,
            Inner::Open { until } if now < until => false,
            // Cooldown over: this caller is the probe.
            Inner::Open { .. }
            | Inner::HalfOpen {
                probe_in_flight: false,
            } => {
                self.state = Inner::HalfOpen {
                    probe_in_flight: true,
                };
                true
            }
            Inner::HalfOpen {
                probe_in_flight: true,
            } => false,
        }
    }

    fn record(&mut self, now: Instant, success: bool) {
        let open = Inner::Open {
            until: now + self.config.cooldown,
        };
        self.state = match (self.state, success) {
            (Inner::Closed { .. }, true) | (Inner::HalfOpen { .. }, true) => Inner::Closed {
                consecutive_failures: 0,
            },
            (
                Inner::Closed {
                    consecutive_failures,
                },
                false,
            ) => {
                let failures = consecutive_failures + 1;
                if failures >= self.config.failure_threshold {
                    open
                } else {
                    Inner::Closed {
                        consecutive_failures: failures,
                    }
                }
            }
            (Inner::HalfOpen { .. }, false) => open,
            // A late report from a call admitted before the breaker opened: the
            // breaker already decided, leave it alone.
            (state @ Inner::Open { .. }, _) => state,
        };
    }

    fn state(&self, now: Instant) -> State {
        match self.state {
            Inner::Closed { .. } => State::Closed,
            Inner::Open { until } if now < until => State::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => State::HalfOpen,
        }
    }
}
