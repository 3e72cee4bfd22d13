//! The food-ordering domain: values that can only exist when valid ("parse, don't
//! validate") and the order state machine.
//!
//! Nothing here does I/O, so every rule is unit- and property-tested in isolation.

mod money;
mod order;
mod status;

pub use money::{Cents, MoneyError, Quantity};
pub use order::{
    CUSTOMER_ID_PATTERN, CustomerId, DomainError, LineItem, MAX_LINE_ITEMS, MenuItem, NewOrder,
    Order, OrderId, OrderLine, SKU_PATTERN, Sku,
};
pub use status::{CancellationReason, IllegalTransition, OrderEvent, OrderStatus};
