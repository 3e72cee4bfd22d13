//! HTTP plumbing shared by every service: one error shape, one middleware stack.
//!
//! - [`problem`]: RFC 9457 `application/problem+json` bodies, the only error shape a
//!   client ever sees; internals are logged, never returned.
//! - [`json`]: a JSON extractor whose every rejection (syntax, types, content type,
//!   size) becomes a problem with the right 4xx.
//! - [`layers`]: request ids, structured request logging, body limit, timeout, panic
//!   catching — and the fallback that turns bare error responses into problems.

pub mod json;
pub mod layers;
pub mod problem;

pub use json::ApiJson;
pub use layers::{HttpLimits, REQUEST_ID_HEADER, RequestId, with_standard_layers};
pub use problem::Problem;
