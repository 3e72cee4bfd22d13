//! `application/problem+json` (RFC 9457): a small, standard error body.
//!
//! ```json
//! {"type":"urn:ferriseats:problem:unknown-sku","title":"Unknown sku",
//!  "status":422,"detail":"unknown sku: sushi"}
//! ```
//! `type` is a stable identifier clients can match on; `detail` is for humans.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

pub const CONTENT_TYPE: &str = "application/problem+json";

/// An error answer (`application/problem+json`, RFC 9457). Match on `type`; show
/// `detail` to a human. Some problems carry extension members, e.g. `unknown_skus`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(examples(json!({"type": "urn:ferriseats:problem:unknown-sku", "title": "Invalid order", "status": 422, "detail": "unknown sku: sushi", "unknown_skus": ["sushi"]})))]
pub struct Problem {
    /// A stable identifier, `urn:ferriseats:problem:<slug>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    /// The HTTP status, repeated.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Extension members (RFC 9457 §3.2), e.g. `order_id` or `retry_after_seconds`.
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

impl Problem {
    /// `slug` becomes the type `urn:ferriseats:problem:<slug>`.
    pub fn new(status: StatusCode, slug: &str, title: impl Into<String>) -> Self {
        Problem {
            kind: format!("urn:ferriseats:problem:{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: None,
            extensions: Map::new(),
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    /// A problem for a bare HTTP status (405, 413, 408 …) with its canonical reason.
    pub fn from_status(status: StatusCode) -> Self {
        let reason = status.canonical_reason().unwrap_or("Error");
        let slug = reason.to_lowercase().replace(' ', "-");
        Problem::new(status, &slug, reason)
    }

    /// 500 without details: the cause goes to the log, never to the client.
    pub fn internal() -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
        )
        .detail("the error was logged; quote the x-request-id header when reporting it")
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_serializes_per_rfc_9457() {
        let problem = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown-sku",
            "Unknown sku",
        )
        .detail("unknown sku: sushi")
        .with("skus", vec!["sushi"]);
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "urn:ferriseats:problem:unknown-sku",
                "title": "Unknown sku",
                "status": 422,
                "detail": "unknown sku: sushi",
                "skus": ["sushi"],
            })
        );
    }

    #[test]
    fn bare_statuses_get_their_canonical_reason() {
        let problem = Problem::from_status(StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(problem.title, "Method Not Allowed");
        assert_eq!(problem.kind, "urn:ferriseats:problem:method-not-allowed");
        let response = problem.into_response();
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    }
}
