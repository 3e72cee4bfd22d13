//! The checker of exercise 3: 50 threads, one key, one winner.

use super::{Claim, IdempotencyStore};
use crate::{Failure, ensure};
use std::sync::{Arc, Barrier};

const THREADS: usize = 50;

pub fn check<S: IdempotencyStore + 'static>() -> Result<(), Failure> {
    a_completed_key_returns_the_saved_response::<S>()?;
    // Races are probabilistic; several rounds make a lucky pass of a wrong store
    // vanishingly unlikely without slowing down a right one.
    for round in 1..=5 {
        concurrent_duplicates_have_exactly_one_winner::<S>(round)?;
    }
    Ok(())
}

fn a_completed_key_returns_the_saved_response<S: IdempotencyStore>() -> Result<(), Failure> {
    let store = S::new();
    let first = store.begin("order-1");
    ensure(first == Claim::Started, || {
        format!("the first request with a new key must be told Started, got {first:?}")
    })?;
    let second = store.begin("order-1");
    ensure(second == Claim::InProgress, || {
        format!(
            "a second request while the first is still working must be told InProgress, got {second:?}"
        )
    })?;
    store.complete("order-1", "201 order 42");
    let retry = store.begin("order-1");
    ensure(retry == Claim::Done("201 order 42".into()), || {
        format!(
            "a retry after completion must get the saved response \"201 order 42\", got {retry:?}"
        )
    })?;
    let other = store.begin("order-2");
    ensure(other == Claim::Started, || {
        format!("a different key is a different request and must be told Started, got {other:?}")
    })
}

fn concurrent_duplicates_have_exactly_one_winner<S: IdempotencyStore + 'static>(
    round: u32,
) -> Result<(), Failure> {
    let store = Arc::new(S::new());
    let barrier = Arc::new(Barrier::new(THREADS));
    let key = format!("double-click-{round}");
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (store, barrier, key) = (Arc::clone(&store), Arc::clone(&barrier), key.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store.begin(&key)
            })
        })
        .collect();
    let mut claims = Vec::with_capacity(THREADS);
    for handle in handles {
        claims.push(
            handle
                .join()
                .map_err(|_| Failure::new("a thread calling begin() panicked"))?,
        );
    }
    let started = claims.iter().filter(|c| **c == Claim::Started).count();
    ensure(started == 1, || {
        format!(
            "round {round}: {started} of {THREADS} concurrent requests with key {key:?} were told \
             Started; exactly one may do the work, or the card is charged {started} times"
        )
    })?;
    let in_progress = claims.iter().filter(|c| **c == Claim::InProgress).count();
    ensure(in_progress == THREADS - 1, || {
        format!(
            "round {round}: the {} losers must be told InProgress, only {in_progress} were",
            THREADS - 1
        )
    })
}
