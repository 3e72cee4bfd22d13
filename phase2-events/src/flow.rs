//! The event flow: topics, event types and their payloads, in one place.
//!
//! ```text
//!  POST /orders ─▶ order ══OrderPlaced══▶ orders ─┬─▶ payment   ══PaymentCompleted / PaymentFailed══▶ payments ─┐
//!   (+ outbox)                                    ├─▶ inventory ══StockReserved / OutOfStock═══════▶ inventory ─┤
//!                                                 ├─▶ notification (Redis, WebSocket)                          │
//!                                                 └─▶ delivery  ══DeliveryPreparing/Dispatched/Completed▶ delivery┤
//!                        order ◀══════════════════════════════════════════════════════════════════════════════┘
//!                          └══OrderPaid / OrderConfirmed / OrderCancelled / OrderPreparing / … ══▶ orders
//! ```
//!
//! The **order** service owns the saga: payment and stock reservation run in
//! parallel on `OrderPlaced`; the order service combines their answers through the
//! order state machine ([`common::domain::OrderStatus::apply`]) and announces every
//! status change on `orders`. A failure on either side cancels the order, and
//! `OrderCancelled` is the one event that triggers compensation: payment refunds a
//! captured charge, inventory releases a reservation. Because `OrderPlaced` and
//! `OrderCancelled` share the `orders` topic and the order id key, every service sees
//! them in that order.
//!
//! | topic       | written by (outbox of) | events                                                        | read by |
//! |-------------|------------------------|---------------------------------------------------------------|---------|
//! | `orders`    | order                  | `OrderPlaced`, `OrderPaid`, `OrderConfirmed`, `OrderPreparing`, `OrderOutForDelivery`, `OrderDelivered`, `OrderCancelled` | payment, inventory, delivery, notification |
//! | `payments`  | payment                | `PaymentCompleted`, `PaymentFailed`, `PaymentRefunded`         | order |
//! | `inventory` | inventory              | `StockReserved`, `OutOfStock`, `StockReleased`                 | order |
//! | `delivery`  | delivery               | `DeliveryPreparing`, `DeliveryDispatched`, `DeliveryCompleted` | order |
//!
//! Each topic has a `.retry` and a `.dlq` companion (see [`crate::consumer`]). Every
//! message's key is the order id, so one order's events stay in order.
//!
//! ## What one order costs, and why each piece stays
//!
//! | where | transactions | why it is there |
//! |---|---|---|
//! | `POST /orders` | 1 | the order, its `OrderPlaced` and the idempotent response together: no dual write |
//! | relays (4 outboxes) | batched (up to 200 rows, one `UPDATE` marks them) | at least once, marked by exact id |
//! | payment on `OrderPlaced` | 1 per charge | the charge is in the transaction (see [`crate::services::payment`]) |
//! | inventory, saga, delivery scheduler | batched ([`crate::consumer::Handler::BATCH`]) | effect + `processed_events` + outbox in one commit: effectively once |
//! | delivery ticker | batched (every due row) | three stages, each announced |
//! | notification | none (Redis) | best effort, de-duplicated by `SET NX` |
//! | events a service ignores | none ([`crate::consumer::Handler::wants`]) | payment, inventory and delivery read `orders` but act on one or two of its seven event types |
//!
//! **The delivery stages are announced twice** — `DeliveryPreparing` by delivery,
//! then `OrderPreparing` by the order service — on purpose. The order service is the
//! one owner of an order's status: its state machine decides whether a stage applies
//! (a `DeliveryCompleted` for an order cancelled meanwhile is refused), and everyone
//! who follows an order's status (notification, the live WebSocket, a gateway in
//! phase 4) reads one topic, `orders`, without knowing which service caused the
//! change. Letting delivery write the status would give an order two writers. The
//! price is three outbox rows and three messages per order, which batching makes
//! cheap; the per-event commits it used to cost are gone.

use crate::consumer::{dlq_topic, retry_group, retry_topic};
use common::domain::{CancellationReason, OrderStatus};
use serde::{Deserialize, Serialize};

/// Event type names (the envelope's `event_type`).
pub mod event {
    pub const ORDER_PLACED: &str = "OrderPlaced";
    pub const ORDER_PAID: &str = "OrderPaid";
    pub const ORDER_CONFIRMED: &str = "OrderConfirmed";
    pub const ORDER_PREPARING: &str = "OrderPreparing";
    pub const ORDER_OUT_FOR_DELIVERY: &str = "OrderOutForDelivery";
    pub const ORDER_DELIVERED: &str = "OrderDelivered";
    pub const ORDER_CANCELLED: &str = "OrderCancelled";
    pub const PAYMENT_COMPLETED: &str = "PaymentCompleted";
    pub const PAYMENT_FAILED: &str = "PaymentFailed";
    pub const PAYMENT_REFUNDED: &str = "PaymentRefunded";
    pub const STOCK_RESERVED: &str = "StockReserved";
    pub const OUT_OF_STOCK: &str = "OutOfStock";
    pub const STOCK_RELEASED: &str = "StockReleased";
    pub const DELIVERY_PREPARING: &str = "DeliveryPreparing";
    pub const DELIVERY_DISPATCHED: &str = "DeliveryDispatched";
    pub const DELIVERY_COMPLETED: &str = "DeliveryCompleted";
}

/// The event announcing that an order reached `status`.
pub fn status_event(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Placed => event::ORDER_PLACED,
        OrderStatus::Paid => event::ORDER_PAID,
        OrderStatus::Confirmed => event::ORDER_CONFIRMED,
        OrderStatus::Preparing => event::ORDER_PREPARING,
        OrderStatus::OutForDelivery => event::ORDER_OUT_FOR_DELIVERY,
        OrderStatus::Delivered => event::ORDER_DELIVERED,
        OrderStatus::Cancelled => event::ORDER_CANCELLED,
    }
}

/// The five services. One type for the names every crate shares: a service's
/// subcommand, its consumer group (and the `consumer` column of `processed_events`),
/// the topics it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Order,
    Payment,
    Inventory,
    Notification,
    Delivery,
}

impl Service {
    /// All five; every one of them consumes.
    pub const ALL: [Service; 5] = [
        Service::Order,
        Service::Payment,
        Service::Inventory,
        Service::Notification,
        Service::Delivery,
    ];

    /// `payment`: its subcommand (`phase2-events payment`).
    pub const fn name(self) -> &'static str {
        match self {
            Service::Order => "order",
            Service::Payment => "payment",
            Service::Inventory => "inventory",
            Service::Notification => "notification",
            Service::Delivery => "delivery",
        }
    }

    /// `payment-service`: its consumer group outside any namespace (see
    /// [`Topics::group`]), and the name it records its processed events under.
    pub const fn group(self) -> &'static str {
        match self {
            Service::Order => "order-service",
            Service::Payment => "payment-service",
            Service::Inventory => "inventory-service",
            Service::Notification => "notification-service",
            Service::Delivery => "delivery-service",
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Topic names. A non-empty namespace prefixes every topic and consumer group
/// (`<namespace>.orders`), so several systems — e.g. parallel tests — can share one
/// broker without seeing each other's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    namespace: String,
    pub orders: String,
    pub payments: String,
    pub inventory: String,
    pub delivery: String,
}

impl Topics {
    pub fn new(namespace: &str) -> Topics {
        let name = |topic: &str| {
            if namespace.is_empty() {
                topic.to_owned()
            } else {
                format!("{namespace}.{topic}")
            }
        };
        Topics {
            namespace: namespace.to_owned(),
            orders: name("orders"),
            payments: name("payments"),
            inventory: name("inventory"),
            delivery: name("delivery"),
        }
    }

    /// The consumer group of a service (`<namespace>.payment-service`).
    pub fn group(&self, service: Service) -> String {
        self.namespaced(service.group())
    }

    /// `name` in this system's namespace (`<namespace>.<name>`): a consumer group of
    /// something else than a service (an observer), a key prefix.
    pub fn namespaced(&self, name: &str) -> String {
        if self.namespace.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.namespace)
        }
    }

    /// The topics the consumer group of `service` reads; its `.retry` group reads
    /// their retry topics.
    pub fn reads(&self, service: Service) -> Vec<String> {
        match service {
            // The saga hears back from everyone else.
            Service::Order => vec![
                self.payments.clone(),
                self.inventory.clone(),
                self.delivery.clone(),
            ],
            // Everyone else reacts to the order's events.
            Service::Payment | Service::Inventory | Service::Notification | Service::Delivery => {
                vec![self.orders.clone()]
            }
        }
    }

    /// Every consumer group and what it reads: `(group, topics)`, the retry groups
    /// included (what a lag monitor must watch).
    pub fn subscriptions(&self) -> Vec<(String, Vec<String>)> {
        Service::ALL
            .into_iter()
            .flat_map(|service| {
                let group = self.group(service);
                let reads = self.reads(service);
                let retries = reads.iter().map(|t| retry_topic(t)).collect();
                [(retry_group(&group), retries), (group, reads)]
            })
            .collect()
    }

    /// The four event topics.
    pub fn main(&self) -> [&str; 4] {
        [
            &self.orders,
            &self.payments,
            &self.inventory,
            &self.delivery,
        ]
    }

    /// Every topic the system uses: the four, their retry and dead-letter topics.
    pub fn all(&self) -> Vec<String> {
        self.main()
            .iter()
            .flat_map(|t| [t.to_string(), retry_topic(t), dlq_topic(t)])
            .collect()
    }
}

/// One line of an order, as inventory needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub qty: i64,
}

/// `OrderPlaced`: everything payment and inventory need, so neither has to call the
/// order service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub status: OrderStatus,
    pub customer_id: String,
    pub total_cents: i64,
    pub items: Vec<Line>,
}

/// Every other `orders` event: the status the order reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChanged {
    pub status: OrderStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation_reason: Option<CancellationReason>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCompleted {
    pub charge_id: String,
    pub amount_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub charge_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutOfStock {
    /// The skus that were short.
    pub skus: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_prefixes_topics_and_groups() {
        let topics = Topics::new("t1");
        assert_eq!(topics.orders, "t1.orders");
        assert_eq!(topics.group(Service::Payment), "t1.payment-service");
        assert_eq!(topics.namespaced("observer"), "t1.observer");
        assert_eq!(Topics::new("").payments, "payments");
        assert_eq!(topics.all().len(), 12);
        assert!(topics.all().contains(&"t1.delivery.dlq".to_owned()));
    }

    #[test]
    fn every_status_has_an_event() {
        let names: std::collections::HashSet<_> =
            OrderStatus::ALL.into_iter().map(status_event).collect();
        assert_eq!(names.len(), OrderStatus::ALL.len());
    }
}
