//! Exercise 8: compensation — the payment failed after the stock was reserved.
//!
//! In phase 2's saga, payment and stock reservation run in parallel on
//! `OrderPlaced`. When the payment fails, the stock has often been reserved already,
//! in another service's database: there is no transaction spanning both to roll
//! back. The saga cancels the order instead, and `OrderCancelled` asks every service
//! to **compensate** — undo its own step with a new, forward action. Inventory puts
//! the food back on the shelf. Messages arrive at least once and not always in the
//! order the story happened, so the compensation must be exact: release what was
//! reserved, once, and nothing that was not.

pub mod check;
pub mod solution;
pub mod starter;
crate::yours!("ex08_compensation");

pub use phase2_events::consumer::{HandleError, Handler};
pub use phase2_events::events::Envelope;
pub use phase2_events::flow::{Line, Topics, event};
use std::sync::Arc;

/// What the learner implements (their copy of `starter.rs`) and the reference
/// implements (`solution.rs`, which is phase 2's inventory service itself).
pub trait CompensatingInventory: Handler {
    /// An inventory handler announcing its events on `topics.inventory`.
    fn new(topics: Arc<Topics>) -> Self;
}

pub const HINTS: &[&str] = &[
    "The reservation row remembers what this service did for the order: `status` and \
     `lines`. Compensate only what it says — `reserved` means stock is held; `rejected` \
     (out of stock) means nothing was ever taken.",
    "After putting the stock back, set the row's status to `released` in the same \
     transaction. A second `OrderCancelled` (the saga retried, with a new event id, so \
     processed_events does not catch it) then finds `released` and does nothing.",
    "Announce the compensation: enqueue `StockReleased` (caused by the cancel event) on \
     `topics.inventory` with `phase2_events::outbox::enqueue` — once, together with the \
     release.",
    "A cancel can overtake the reservation (the `OrderPlaced` was waiting in the retry \
     topic). With no row, insert one with status `voided`: `reserve` sees a decision \
     already made and holds nothing. The reference is `Inventory::release` in \
     phase2-events/src/services/inventory.rs.",
];

pub const EXERCISE: crate::Exercise = crate::Exercise {
    number: 8,
    dir: "ex08_compensation",
    title: "compensation when payment fails after stock was reserved",
    readme: include_str!("README.md"),
    hints: HINTS,
    needs: &[
        crate::infra::Service::Postgres,
        crate::infra::Service::Kafka,
    ],
    check_starter: check::check::<starter::Inventory>,
    check_yours: check::check::<yours::Inventory>,
    check_solution: check::check::<solution::Inventory>,
};
