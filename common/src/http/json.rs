//! A JSON extractor that answers every bad body with a problem.
//!
//! axum's own `Json` already picks the right status (400 bad syntax, 415 wrong
//! content type, 413 too large, 422 well-formed but wrong shape); we keep its status
//! and only change the body, so the client always gets `application/problem+json`.

use super::problem::Problem;
use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The body is read once and handed to axum's `Json` (which checks the content
        // type, syntax and shape), and kept to look at its first byte afterwards.
        let (parts, body) = req.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                Problem::from_status(status).detail(rejection.body_text())
            })?;
        let req = Request::from_parts(parts, Body::from(bytes.clone()));
        match axum::Json::<T>::from_request(req, state).await {
            // serde's derived structs also accept an *array* of their fields in order
            // (`["alice", [...]]` as a `PlaceOrder`); an API fuzzer found that
            // `PUT /control` took `[null, null, null]`. Every body here is an object.
            Ok(axum::Json(_)) if !is_object(&bytes) => Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "Invalid request body",
            )
            .detail("the body must be a JSON object")),
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(problem_for(rejection)),
        }
    }
}

/// The first non-whitespace byte of a (syntactically valid) JSON text is `{`.
fn is_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn problem_for(rejection: JsonRejection) -> Problem {
    let status = rejection.status();
    let (slug, title) = match &rejection {
        JsonRejection::JsonSyntaxError(_) => ("malformed-json", "Malformed JSON"),
        JsonRejection::JsonDataError(_) => ("invalid-body", "Invalid request body"),
        JsonRejection::MissingJsonContentType(_) => (
            "unsupported-media-type",
            "Expected Content-Type: application/json",
        ),
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "Payload too large"),
        _ => ("bad-request", "Bad request"),
    };
    // `body_text` explains *what* is wrong (e.g. "items[0].qty: quantity must be
    // between 1 and 99") without exposing anything internal.
    Problem::new(status, slug, title).detail(rejection.body_text())
}
