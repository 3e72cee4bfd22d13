//! The order state machine: one small, total function.
//!
//! ```text
//! placed ──PaymentSucceeded──▶ paid ──StockReserved──▶ confirmed ──StartPreparing──▶ preparing
//!   │                           │                                                       │
//!   │ PaymentFailed             │ OutOfStock                                        Dispatch
//!   │ OutOfStock                │                                                       │
//!   ▼                           ▼                                                       ▼
//! cancelled ◀───────────── cancelled (refund)          delivered ◀──Deliver── out_for_delivery
//! ```
//!
//! `placed` is the in-doubt state: the order is stored but nobody knows yet whether
//! the customer was charged. Phase 1 only ever moves an order to `paid` or `cancelled`;
//! phase 2 drives the rest. There, payment and stock reservation run in parallel, so
//! stock can run out before the payment is settled (`placed` + `OutOfStock`); a stock
//! reservation that arrives first is remembered beside the order and applied as
//! `StockReserved` once it is `paid`. Every pair not listed in [`OrderStatus::apply`] is an
//! [`IllegalTransition`] — e.g. a late `PaymentFailed` can never cancel a paid order.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Stored; payment not settled yet (in flight, or in doubt after a timeout/crash).
    Placed,
    Paid,
    Confirmed,
    Preparing,
    OutForDelivery,
    Delivered,
    Cancelled,
}

/// Things that happen to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderEvent {
    PaymentSucceeded,
    PaymentFailed,
    StockReserved,
    OutOfStock,
    StartPreparing,
    Dispatch,
    Deliver,
}

/// Why an order ended `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancellationReason {
    PaymentFailed,
    OutOfStock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: {event:?} cannot happen to an order that is {from}")]
pub struct IllegalTransition {
    pub from: OrderStatus,
    pub event: OrderEvent,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 7] = [
        OrderStatus::Placed,
        OrderStatus::Paid,
        OrderStatus::Confirmed,
        OrderStatus::Preparing,
        OrderStatus::OutForDelivery,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
    ];

    /// The statuses a delivered order passes through, in order.
    pub const HAPPY_PATH: [OrderStatus; 6] = [
        OrderStatus::Placed,
        OrderStatus::Paid,
        OrderStatus::Confirmed,
        OrderStatus::Preparing,
        OrderStatus::OutForDelivery,
        OrderStatus::Delivered,
    ];

    /// The whole state machine. Total: every (status, event) pair has an answer.
    pub fn apply(self, event: OrderEvent) -> Result<OrderStatus, IllegalTransition> {
        use OrderEvent as E;
        use OrderStatus as S;
        match (self, event) {
            (S::Placed, E::PaymentSucceeded) => Ok(S::Paid),
            (S::Placed, E::PaymentFailed) => Ok(S::Cancelled),
            (S::Placed, E::OutOfStock) => Ok(S::Cancelled),
            (S::Paid, E::StockReserved) => Ok(S::Confirmed),
            (S::Paid, E::OutOfStock) => Ok(S::Cancelled),
            (S::Confirmed, E::StartPreparing) => Ok(S::Preparing),
            (S::Preparing, E::Dispatch) => Ok(S::OutForDelivery),
            (S::OutForDelivery, E::Deliver) => Ok(S::Delivered),
            (from, event) => Err(IllegalTransition { from, event }),
        }
    }

    /// Final states: nothing more will ever happen to the order.
    pub fn is_final(self) -> bool {
        matches!(self, OrderStatus::Delivered | OrderStatus::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "placed",
            OrderStatus::Paid => "paid",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Preparing => "preparing",
            OrderStatus::OutForDelivery => "out_for_delivery",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown order status {s:?}"))
    }
}

impl CancellationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancellationReason::PaymentFailed => "payment_failed",
            CancellationReason::OutOfStock => "out_of_stock",
        }
    }
}

impl FromStr for CancellationReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "payment_failed" => Ok(CancellationReason::PaymentFailed),
            "out_of_stock" => Ok(CancellationReason::OutOfStock),
            other => Err(format!("unknown cancellation reason {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EVENTS: [OrderEvent; 7] = [
        OrderEvent::PaymentSucceeded,
        OrderEvent::PaymentFailed,
        OrderEvent::StockReserved,
        OrderEvent::OutOfStock,
        OrderEvent::StartPreparing,
        OrderEvent::Dispatch,
        OrderEvent::Deliver,
    ];

    fn any_status() -> impl Strategy<Value = OrderStatus> {
        proptest::sample::select(OrderStatus::ALL.to_vec())
    }
    fn any_event() -> impl Strategy<Value = OrderEvent> {
        proptest::sample::select(EVENTS.to_vec())
    }

    #[test]
    fn the_happy_path_is_walked_by_the_state_machine() {
        for pair in OrderStatus::HAPPY_PATH.windows(2) {
            assert!(
                EVENTS.iter().any(|&e| pair[0].apply(e) == Ok(pair[1])),
                "no event takes {} to {}",
                pair[0],
                pair[1]
            );
        }
        assert!(OrderStatus::HAPPY_PATH[5].is_final());
    }

    #[test]
    fn the_happy_path_reaches_delivered() {
        let mut status = OrderStatus::Placed;
        for event in [
            OrderEvent::PaymentSucceeded,
            OrderEvent::StockReserved,
            OrderEvent::StartPreparing,
            OrderEvent::Dispatch,
            OrderEvent::Deliver,
        ] {
            status = status.apply(event).unwrap();
        }
        assert_eq!(status, OrderStatus::Delivered);
    }

    #[test]
    fn a_late_payment_failure_cannot_cancel_a_paid_order() {
        let err = OrderStatus::Paid
            .apply(OrderEvent::PaymentFailed)
            .unwrap_err();
        assert_eq!(err.from, OrderStatus::Paid);
    }

    #[test]
    fn a_payment_cannot_succeed_twice() {
        assert!(
            OrderStatus::Paid
                .apply(OrderEvent::PaymentSucceeded)
                .is_err()
        );
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in OrderStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
    }

    proptest! {
        #[test]
        fn final_states_accept_no_event(status in any_status(), event in any_event()) {
            if status.is_final() {
                prop_assert!(status.apply(event).is_err());
            }
        }

        #[test]
        fn no_transition_leads_back_to_placed(status in any_status(), event in any_event()) {
            if let Ok(next) = status.apply(event) {
                prop_assert_ne!(next, OrderStatus::Placed);
                prop_assert_ne!(next, status, "every legal transition changes the status");
            }
        }

        #[test]
        fn any_event_sequence_only_moves_forward(events in proptest::collection::vec(any_event(), 0..20)) {
            // Rank statuses by progress; cancelled is a sink.
            let rank = |s: OrderStatus| OrderStatus::ALL.iter().position(|x| *x == s).unwrap();
            let mut status = OrderStatus::Placed;
            for event in events {
                match status.apply(event) {
                    Ok(next) => {
                        prop_assert!(next == OrderStatus::Cancelled || rank(next) > rank(status));
                        status = next;
                    }
                    Err(e) => prop_assert_eq!(e, IllegalTransition { from: status, event }),
                }
            }
        }
    }
}
