//! The reference for exercise 8 is phase 2's inventory service itself,
//! `Inventory` in `phase2-events/src/services/inventory.rs`: read `release` and the
//! table at the top of that file.
//!
//! | `OrderCancelled` finds | it does                                            |
//! |------------------------|----------------------------------------------------|
//! | `reserved`             | stock back, row → `released`, `StockReleased` out  |
//! | `rejected` / `released` / `voided` | nothing: nothing is held (any more)    |
//! | no row                 | row `voided`, so a late `OrderPlaced` holds nothing |
//!
//! All in the consumer's transaction, together with the `processed_events` row.

use super::{CompensatingInventory, Topics};
use std::sync::Arc;

pub use phase2_events::services::inventory::Inventory;

impl CompensatingInventory for Inventory {
    fn new(topics: Arc<Topics>) -> Self {
        Inventory::new(topics)
    }
}
