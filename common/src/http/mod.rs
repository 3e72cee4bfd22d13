//! HTTP plumbing shared by every service: one error shape, one middleware stack.
//!
//! - [`problem`]: RFC 9457 `application/problem+json` bodies, the only error shape a
//!   client ever sees; internals are logged, never returned.
//! - [`json`]: a JSON extractor whose every rejection (syntax, types, content type,
//!   size) becomes a problem with the right 4xx.
//! - [`layers`]: request ids, structured request logging, body limit, timeout, panic
//!   catching — and the fallback that turns bare error responses into problems.
//! - [`listen`]: binding a port, with an error that says what holds it and which
//!   flag moves it.
//! - [`openapi`]: the OpenAPI document generated from the handlers, served at
//!   `GET /openapi.json` and checked in per phase.

pub mod json;
pub mod layers;
pub mod listen;
pub mod openapi;
pub mod problem;

pub use json::ApiJson;
pub use layers::{HttpLimits, REQUEST_ID_HEADER, RequestId, with_standard_layers};
pub use listen::listen;
pub use problem::Problem;

/// Liveness, for every service: the process answers. Nothing else is checked — a
/// restart would not fix a dependency (phase 1's `health` module explains why).
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
pub async fn health() -> &'static str {
    "ok"
}
