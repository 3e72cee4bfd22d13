//! Guided exercises with an automatic checker.
//!
//! Each exercise `exNN_name/` is a module directory holding:
//!
//! * `README.md` — the goal, what to read first, which phase file shows the finished
//!   pattern, and a time estimate;
//! * `starter.rs` — what the learner starts from; its `// TODO(exercise)` gaps compile
//!   but are wrong. `start N` copies it to `mine/exNN_name.rs`, the learner's own file,
//!   which `check` and `watch` run instead (the `yours` module; see `build.rs`);
//! * `solution.rs` — the reference, never edited by learners;
//! * `check.rs` — a checker taking *any* implementation of the exercise's small trait
//!   and returning a [`Failure`] that says in plain words what went wrong;
//! * `mod.rs` — the trait both implementations share, and the hints.
//!
//! The checkers exercise behaviour — statistics of jitter samples, a deadline that
//! is never overrun, 50 threads racing for one key — not just compilation. From
//! exercise 5 on they run against the real PostgreSQL and Apache Kafka that
//! `cargo xtask up` starts, through phase 2's and phase 3's own libraries
//! ([`infra`] reaches them, or says which one is missing).
//! `tests/both_directions.rs` proves for every exercise that the starter fails its
//! check and the solution passes it: a check that cannot fail is a defect.
//!
//! Layout: [`EXERCISES`] is the registry the binary (`src/main.rs`) walks;
//! [`progress`] keeps the revealed-hint counts in `.ferriseats/exercises.json`.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The module holding the learner's code for an exercise: their copy in
/// `exercises/mine/<dir>.rs` once `start N` made it, else the shipped starter.
macro_rules! yours {
    ($dir:literal) => {
        /// The code `check` runs: your copy `exercises/mine/…` (or the starter).
        pub mod yours {
            include!(concat!(env!("OUT_DIR"), "/yours_", $dir, ".rs"));
        }
    };
}
pub(crate) use yours;

pub mod ex01_backoff;
pub mod ex02_breaker;
pub mod ex03_idempotency_store;
pub mod ex04_retry_safe_payment;
pub mod ex05_idempotent_consumer;
pub mod ex06_outbox_relay;
pub mod ex07_poison_message;
pub mod ex08_compensation;
pub mod ex09_percentiles;
pub mod ex10_consumer_lag;
pub mod ex11_diagnose_incident;
pub mod infra;
pub mod progress;

/// Why a check did not pass, in words a learner can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl Failure {
    pub fn new(message: impl Into<String>) -> Self {
        Failure(message.into())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// `Err(Failure)` unless `condition` holds; the message is only built on failure.
pub(crate) fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), Failure> {
    if condition {
        Ok(())
    } else {
        Err(Failure(message()))
    }
}

/// One exercise as the binary and the tests see it.
#[derive(Debug, Clone, Copy)]
pub struct Exercise {
    pub number: u32,
    /// The module directory under `exercises/src/`.
    pub dir: &'static str,
    pub title: &'static str,
    pub readme: &'static str,
    /// Revealed one at a time by `hint N`.
    pub hints: &'static [&'static str],
    /// What the check needs running (`cargo xtask up` starts it); empty for the
    /// plain-Rust exercises.
    pub needs: &'static [infra::Service],
    /// The checker run against the shipped, unsolved `starter.rs` (used by the tests).
    pub check_starter: fn() -> Result<(), Failure>,
    /// The checker run against the learner's code ([`Exercise::mine_path`], or the
    /// starter until `start N` made the copy).
    pub check_yours: fn() -> Result<(), Failure>,
    /// The same checker run against `solution.rs` (used by the tests).
    pub check_solution: fn() -> Result<(), Failure>,
}

impl Exercise {
    /// The shipped starter, relative to the `exercises/` crate.
    pub fn starter_path(&self) -> String {
        format!("src/{}/starter.rs", self.dir)
    }

    /// The learner's copy, relative to the `exercises/` crate.
    pub fn mine_path(&self) -> String {
        format!("mine/{}.rs", self.dir)
    }
}

/// Every exercise, in the order to take them.
pub const EXERCISES: &[Exercise] = &[
    ex01_backoff::EXERCISE,
    ex02_breaker::EXERCISE,
    ex03_idempotency_store::EXERCISE,
    ex04_retry_safe_payment::EXERCISE,
    ex05_idempotent_consumer::EXERCISE,
    ex06_outbox_relay::EXERCISE,
    ex07_poison_message::EXERCISE,
    ex08_compensation::EXERCISE,
    ex09_percentiles::EXERCISE,
    ex10_consumer_lag::EXERCISE,
    ex11_diagnose_incident::EXERCISE,
];

pub fn find(number: u32) -> Option<&'static Exercise> {
    EXERCISES.iter().find(|e| e.number == number)
}

/// Run a checker, turning a panic in the code under test into a [`Failure`]
/// (an overflow in `base * 2^attempt` is a wrong answer, not a crash of the tool).
pub fn run_check(check: fn() -> Result<(), Failure>) -> Result<(), Failure> {
    match catch_unwind(AssertUnwindSafe(check)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(Failure(format!("the code under test panicked: {message}")))
        }
    }
}

/// A tiny deterministic random source for the checkers (xorshift64*), so a failing
/// check fails the same way every time and the crate needs no `rand`.
#[derive(Debug, Clone)]
pub(crate) struct CheckRng(u64);

impl CheckRng {
    pub(crate) fn new(seed: u64) -> Self {
        CheckRng(seed.max(1))
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn fraction(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}
