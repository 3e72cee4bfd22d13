//! # FerrisEats `common`
//!
//! The building blocks every phase shares, each explained once, where it lives.
//!
//! ## Layout
//!
//! | module          | what it holds                                                        |
//! |-----------------|----------------------------------------------------------------------|
//! | [`domain`]      | orders, money, quantities, the order state machine                   |
//! | [`resilience`]  | backoff with full jitter; the circuit breaker's state machine         |
//! | [`payment`]     | the payment provider simulator and the resilient client that calls it |
//! | [`http`]        | problem+json errors, JSON extractor, the standard middleware stack   |
//! | [`db`]          | one connection function for SQLite and PostgreSQL                    |
//! | [`migrations`]  | SQL migrations compiled in (`embed_migrations!`) without sqlx's macro crate |
//! | [`telemetry`]   | JSON logs where every line carries the request id                    |
//! | [`shutdown`]    | Ctrl-C / SIGTERM as a `CancellationToken`                            |
//! | [`unreachable`] | "cannot reach PostgreSQL at …: start it with `cargo xtask up`", in one line, at once |
//! | [`endpoints`]   | (from `common-local`) where PostgreSQL, Redis and Kafka listen, and the variables that move them |
//! | [`local_kafka`] | (from `common-local`) Apache Kafka on this machine: configuration, readiness probe, test clusters |
//! | `testing`       | (feature `testing`) a fresh database per test, logs kept in memory   |
//!
//! Nothing here depends on Kafka or OpenTelemetry: the phases that introduce them
//! (2 and 3) carry those dependencies, so phase 1 builds without them.

/// Implements utoipa's `ToSchema` for a value type from an `ObjectBuilder` recipe:
/// `schema_of!(Sku, |s| s.schema_type(Type::String).pattern(Some(SKU_PATTERN)))`.
/// Defined before the modules (macros are scoped by text order).
macro_rules! schema_of {
    ($ty:ty, |$b:ident| $build:expr) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                let $b = utoipa::openapi::ObjectBuilder::new();
                $build.into()
            }
        }
        impl utoipa::ToSchema for $ty {}
    };
}

pub mod db;
pub mod domain;
pub mod http;
pub mod migrations;
pub mod payment;
pub mod resilience;
pub mod shutdown;
pub mod telemetry;
pub mod unreachable;

// The local infrastructure lives in `common-local` (std only, so xtask can use it
// without compiling the rest); the phases reach it from here.
pub use common_local::{endpoints, local_kafka};
#[cfg(feature = "testing")]
pub mod testing;
