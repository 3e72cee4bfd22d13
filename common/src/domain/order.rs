//! Orders, their identifiers and how a request becomes a priced order.

use super::money::{Cents, MoneyError, Quantity};
use super::status::{CancellationReason, OrderStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Orders are identified by UUIDv7: unique without coordination, and time-ordered so
/// that new rows land at the end of the primary-key index instead of at random pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(Uuid);

impl OrderId {
    pub fn new() -> Self {
        OrderId(Uuid::now_v7())
    }
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for OrderId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(OrderId)
    }
}

/// Who ordered. Opaque to us, but bounded and printable so it is safe to log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct CustomerId(String);

/// A menu item's stock-keeping unit, e.g. `pizza-margherita`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Sku(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("customer_id must be 1 to 64 printable characters, with no space at either end")]
    InvalidCustomerId,
    #[error("sku must be 1 to 64 characters of a-z, A-Z, 0-9, '-' or '_'")]
    InvalidSku,
    #[error("an order needs at least one item")]
    EmptyOrder,
    #[error("an order may have at most {MAX_LINE_ITEMS} lines")]
    TooManyLines,
    #[error("sku {0} appears twice; put the total quantity on one line")]
    DuplicateSku(String),
    #[error("unknown sku: {}", .0.join(", "))]
    UnknownSku(Vec<String>),
    #[error(transparent)]
    Money(#[from] MoneyError),
}

pub const MAX_LINE_ITEMS: usize = 20;

/// [`CustomerId::parse`]'s rule as a regular expression, for the OpenAPI schema: a
/// non-space, non-control first and last character, no control character between.
pub const CUSTOMER_ID_PATTERN: &str =
    r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$";

/// [`Sku::parse`]'s rule as a regular expression, for the OpenAPI schema.
pub const SKU_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

// OpenAPI schemas of the identifiers: written by hand because their rules live in
// `parse`, which a derive cannot see (a derived schema would say only "string").
schema_of!(OrderId, |s| s
    .schema_type(utoipa::openapi::Type::String)
    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
        utoipa::openapi::KnownFormat::Uuid
    )))
    .description(Some("A UUIDv7, chosen by the server.")));
schema_of!(CustomerId, |s| s
    .schema_type(utoipa::openapi::Type::String)
    .min_length(Some(1))
    .max_length(Some(64))
    .pattern(Some(CUSTOMER_ID_PATTERN))
    .description(Some(
        "Who ordered: 1 to 64 characters, no control characters, no space at either end."
    ))
    .examples(["alice"]));
schema_of!(Sku, |s| s
    .schema_type(utoipa::openapi::Type::String)
    .min_length(Some(1))
    .max_length(Some(64))
    .pattern(Some(SKU_PATTERN))
    .description(Some("A menu item's stock-keeping unit."))
    .examples(["pizza-margherita"]));

impl CustomerId {
    /// The rule is exactly what the OpenAPI schema says ([`CUSTOMER_ID_PATTERN`]), so
    /// an API fuzzer's valid ids are accepted and its invalid ones refused: 1 to 64
    /// characters, none of them control characters, no space at either end.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = (1..=64).contains(&raw.chars().count())
            && !raw.chars().any(char::is_control)
            && raw.trim() == raw;
        ok.then(|| CustomerId(raw.to_owned()))
            .ok_or(DomainError::InvalidCustomerId)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Sku {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Sku(raw.to_owned()))
            .ok_or(DomainError::InvalidSku)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! deserialize_by_parsing {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                <$ty>::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_by_parsing!(CustomerId, Sku);

/// What the customer asked for: a sku and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LineItem {
    pub sku: Sku,
    pub qty: Quantity,
}

/// Something on the menu, with its current price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MenuItem {
    pub sku: Sku,
    pub name: String,
    pub price_cents: Cents,
}

/// A priced line of an order. The unit price is copied from the menu at order time:
/// a later price change must not change what the customer agreed to pay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderLine {
    pub sku: Sku,
    pub name: String,
    pub qty: Quantity,
    pub unit_price_cents: Cents,
    pub line_total_cents: Cents,
}

/// A validated, priced order that has not been stored yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub id: OrderId,
    pub customer_id: CustomerId,
    pub lines: Vec<OrderLine>,
    pub total_cents: Cents,
}

impl NewOrder {
    /// Prices `items` from `menu`. All unknown skus are reported at once.
    pub fn price(
        customer_id: CustomerId,
        items: &[LineItem],
        menu: &HashMap<Sku, MenuItem>,
    ) -> Result<NewOrder, DomainError> {
        if items.is_empty() {
            return Err(DomainError::EmptyOrder);
        }
        if items.len() > MAX_LINE_ITEMS {
            return Err(DomainError::TooManyLines);
        }
        let mut seen = BTreeSet::new();
        for item in items {
            if !seen.insert(&item.sku) {
                return Err(DomainError::DuplicateSku(item.sku.0.clone()));
            }
        }
        let unknown: Vec<String> = items
            .iter()
            .filter(|item| !menu.contains_key(&item.sku))
            .map(|item| item.sku.0.clone())
            .collect();
        if !unknown.is_empty() {
            return Err(DomainError::UnknownSku(unknown));
        }
        let mut total = Cents::ZERO;
        let mut lines = Vec::with_capacity(items.len());
        for item in items {
            let menu_item = &menu[&item.sku];
            let line_total = menu_item.price_cents.checked_mul(item.qty)?;
            total = total.checked_add(line_total)?;
            lines.push(OrderLine {
                sku: item.sku.clone(),
                name: menu_item.name.clone(),
                qty: item.qty,
                unit_price_cents: menu_item.price_cents,
                line_total_cents: line_total,
            });
        }
        Ok(NewOrder {
            id: OrderId::new(),
            customer_id,
            lines,
            total_cents: total,
        })
    }
}

/// A stored order, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Order {
    pub id: OrderId,
    pub customer_id: CustomerId,
    pub status: OrderStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancellation_reason: Option<CancellationReason>,
    pub items: Vec<OrderLine>,
    pub total_cents: Cents,
    /// The client's `Idempotency-Key`, if it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The provider's charge id once paid: the link between our books and theirs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    /// Optimistic-concurrency version; every status change increments it.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn menu() -> HashMap<Sku, MenuItem> {
        [("pizza", 1250), ("cola", 300)]
            .into_iter()
            .map(|(sku, price)| {
                let sku = Sku::parse(sku).unwrap();
                let item = MenuItem {
                    sku: sku.clone(),
                    name: sku.as_str().to_uppercase(),
                    price_cents: Cents::new(price).unwrap(),
                };
                (sku, item)
            })
            .collect()
    }

    fn line(sku: &str, qty: i64) -> LineItem {
        LineItem {
            sku: Sku::parse(sku).unwrap(),
            qty: Quantity::new(qty).unwrap(),
        }
    }

    fn customer() -> CustomerId {
        CustomerId::parse("alice").unwrap()
    }

    #[test]
    fn an_order_is_priced_from_the_menu() {
        let order =
            NewOrder::price(customer(), &[line("pizza", 2), line("cola", 1)], &menu()).unwrap();
        assert_eq!(order.total_cents.get(), 2 * 1250 + 300);
        assert_eq!(order.lines[0].line_total_cents.get(), 2500);
        assert_eq!(order.lines[1].name, "COLA");
    }

    #[test]
    fn every_unknown_sku_is_reported() {
        let err = NewOrder::price(
            customer(),
            &[line("sushi", 1), line("pizza", 1), line("ramen", 1)],
            &menu(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            DomainError::UnknownSku(vec!["sushi".into(), "ramen".into()])
        );
    }

    #[test]
    fn empty_duplicate_and_oversized_orders_are_rejected() {
        assert_eq!(
            NewOrder::price(customer(), &[], &menu()),
            Err(DomainError::EmptyOrder)
        );
        assert_eq!(
            NewOrder::price(customer(), &[line("pizza", 1), line("pizza", 2)], &menu()),
            Err(DomainError::DuplicateSku("pizza".into()))
        );
        let many: Vec<_> = (0..=MAX_LINE_ITEMS)
            .map(|i| line(&format!("s{i}"), 1))
            .collect();
        assert_eq!(
            NewOrder::price(customer(), &many, &menu()),
            Err(DomainError::TooManyLines)
        );
    }

    #[test]
    fn identifiers_parse_rather_than_validate() {
        assert!(CustomerId::parse("").is_err());
        assert!(CustomerId::parse("   ").is_err());
        assert!(
            CustomerId::parse("bob\n").is_err(),
            "surrounding whitespace is refused, not trimmed: the schema's pattern says so"
        );
        assert!(CustomerId::parse("bo\u{7}b").is_err());
        assert!(CustomerId::parse(&"x".repeat(65)).is_err());
        assert!(Sku::parse("pizza-margherita_2").is_ok());
        assert!(Sku::parse("pizza margherita").is_err());
        assert!(Sku::parse("").is_err());
        assert!(serde_json::from_str::<Sku>("\"../etc\"").is_err());
    }

    #[test]
    fn order_ids_are_time_ordered() {
        let first = OrderId::new();
        let second = OrderId::new();
        assert!(first < second);
        assert_eq!(first.to_string().parse::<OrderId>().unwrap(), first);
    }
}
