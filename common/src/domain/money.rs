//! Money and quantities as newtypes.
//!
//! Prices are integer cents: floating point cannot represent 0.10 exactly, and a
//! payment system that loses a cent per order is wrong a million times a day.
//! Arithmetic is checked, so an absurd order is an error, never a wrapped number.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount of money in cents (never negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Cents(i64);

/// How many of one menu item a line asks for: 1 ..= [`Quantity::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Quantity(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount must not be negative (got {0})")]
    Negative(i64),
    #[error("quantity must be between 1 and {max} (got {got})", max = Quantity::MAX)]
    QuantityOutOfRange { got: i64 },
    #[error("amount overflows")]
    Overflow,
}

impl Cents {
    pub const ZERO: Cents = Cents(0);

    pub fn new(value: i64) -> Result<Self, MoneyError> {
        if value < 0 {
            return Err(MoneyError::Negative(value));
        }
        Ok(Cents(value))
    }

    pub fn get(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Cents) -> Result<Cents, MoneyError> {
        self.0
            .checked_add(other.0)
            .map(Cents)
            .ok_or(MoneyError::Overflow)
    }

    pub fn checked_mul(self, qty: Quantity) -> Result<Cents, MoneyError> {
        self.0
            .checked_mul(i64::from(qty.0))
            .map(Cents)
            .ok_or(MoneyError::Overflow)
    }
}

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl Quantity {
    /// Nobody orders 100 pizzas through a consumer app; a larger number is a typo or
    /// an attack, and rejecting it keeps totals far from overflow.
    pub const MAX: u32 = 99;

    /// Takes a signed number so that `-1` and `0` get the same clear error as `1000`.
    pub fn new(value: i64) -> Result<Self, MoneyError> {
        if (1..=i64::from(Self::MAX)).contains(&value) {
            Ok(Quantity(value as u32))
        } else {
            Err(MoneyError::QuantityOutOfRange { got: value })
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

schema_of!(Cents, |s| s
    .schema_type(utoipa::openapi::Type::Integer)
    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
        utoipa::openapi::KnownFormat::Int64
    )))
    .minimum(Some(0))
    .description(Some("An amount of money in cents; never negative."))
    .examples([1250]));
schema_of!(Quantity, |s| s
    .schema_type(utoipa::openapi::Type::Integer)
    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
        utoipa::openapi::KnownFormat::Int32
    )))
    .minimum(Some(1))
    .maximum(Some(Quantity::MAX))
    .examples([2]));

impl<'de> Deserialize<'de> for Cents {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Cents::new(i64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = i64::deserialize(d)?;
        Quantity::new(raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn negative_amounts_are_rejected() {
        assert_eq!(Cents::new(-1), Err(MoneyError::Negative(-1)));
        assert_eq!(Cents::new(0), Ok(Cents::ZERO));
    }

    #[test]
    fn deserialization_cannot_bypass_the_rules() {
        assert!(serde_json::from_str::<Cents>("-5").is_err());
        assert_eq!(serde_json::from_str::<Cents>("5").unwrap().get(), 5);
    }

    #[test]
    fn cents_display_as_currency() {
        assert_eq!(Cents::new(1234).unwrap().to_string(), "12.34");
        assert_eq!(Cents::new(5).unwrap().to_string(), "0.05");
    }

    #[test]
    fn quantity_bounds_are_inclusive() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(-3).is_err());
        assert_eq!(Quantity::new(1).unwrap().get(), 1);
        assert_eq!(Quantity::new(99).unwrap().get(), 99);
        assert!(Quantity::new(100).is_err());
    }

    #[test]
    fn quantity_deserialization_applies_the_same_rule() {
        assert!(serde_json::from_str::<Quantity>("0").is_err());
        assert!(serde_json::from_str::<Quantity>("1.5").is_err());
        assert_eq!(serde_json::from_str::<Quantity>("7").unwrap().get(), 7);
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let huge = Cents::new(i64::MAX).unwrap();
        assert_eq!(
            huge.checked_mul(Quantity::new(2).unwrap()),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            huge.checked_add(Cents::new(1).unwrap()),
            Err(MoneyError::Overflow)
        );
    }

    proptest! {
        #[test]
        fn a_quantity_exists_only_inside_its_range(raw in any::<i64>()) {
            let parsed = Quantity::new(raw);
            prop_assert_eq!(parsed.is_ok(), (1..=99).contains(&raw));
        }

        #[test]
        fn line_totals_match_integer_arithmetic(price in 0i64..10_000_000, qty in 1i64..=99) {
            let total = Cents::new(price).unwrap().checked_mul(Quantity::new(qty).unwrap()).unwrap();
            prop_assert_eq!(total.get(), price * qty);
        }
    }
}
