//! Exercise 3: an idempotency-key store that survives concurrent duplicates.
//!
//! A client that times out retries with the same key; a double-clicking user sends
//! two requests at once. Exactly one of the requests carrying a key may do the work;
//! the others must be told "in progress" or get the saved response. The classic bug
//! is check-then-insert: two requests both see "no such key", both insert, both
//! charge the card.

pub mod check;
pub mod solution;
pub mod starter;
crate::yours!("ex03_idempotency_store");

/// What `begin` tells a request carrying an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// You are the first: do the work, then call `complete`.
    Started,
    /// Another request with this key is doing the work right now (answer 409).
    InProgress,
    /// The work was done; here is the response that was saved for it.
    Done(String),
}

/// What the learner implements (their copy of `starter.rs`) and the reference implements (in
/// `solution.rs`). Shared between threads, so `&self` and `Send + Sync`.
pub trait IdempotencyStore: Send + Sync {
    fn new() -> Self
    where
        Self: Sized;

    /// Claim `key` for this request.
    fn begin(&self, key: &str) -> Claim;

    /// Save the response of the request that got [`Claim::Started`].
    fn complete(&self, key: &str, response: &str);
}

pub const HINTS: &[&str] = &[
    "Look at the gap between `contains_key` and `insert` in the starter: with 50 threads \
     released at once, many of them pass the check before any of them inserts.",
    "Decide and record in one critical section: hold the same `MutexGuard` for the lookup \
     and the insert. `HashMap::entry` does both in one call.",
    "Don't hold the lock while doing the slow part (the 'database round trip'): it is the \
     *decision* that must be atomic, not the work.",
    "Phase 1 does the same in SQL: `INSERT … ON CONFLICT DO NOTHING` decides who starts \
     (phase1-monolith/src/idempotency.rs).",
];

pub const EXERCISE: crate::Exercise = crate::Exercise {
    number: 3,
    dir: "ex03_idempotency_store",
    title: "an idempotency-key store that survives concurrent duplicates",
    readme: include_str!("README.md"),
    hints: HINTS,
    needs: &[],
    check_starter: check::check::<starter::MemoryStore>,
    check_yours: check::check::<yours::MemoryStore>,
    check_solution: check::check::<solution::MemoryStore>,
};
