//! The middleware stack every FerrisEats HTTP service gets.
//!
//! Outermost first:
//! 1. `SetRequestId` — take the caller's `x-request-id` or generate a UUID.
//! 2. `Trace` — open a `request` span carrying that id. Every log line emitted while
//!    serving the request (handlers, database, payment attempts) is inside this span,
//!    so the JSON logs of one request can be found with one `grep`.
//! 3. `PropagateRequestId` — echo the id back in the response.
//! 4. bare errors → problems — a 405 from the router, a 413 from the body limit, a
//!    timeout or a caught panic has an empty or plain-text body; replace it with an
//!    `application/problem+json` one (keeping headers such as `Allow`).
//! 5. `CatchPanic` (500), `Timeout` (503), `RequestBodyLimit` (413).

use super::problem::Problem;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use std::convert::Infallible;
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest accepted request body; larger ones get 413.
    pub body_limit: usize,
    /// A request still running after this gets 503 (its work is dropped).
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            body_limit: 64 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Wraps `router` in the standard stack and adds a problem+json 404 fallback.
pub fn with_standard_layers(router: Router, limits: HttpLimits) -> Router {
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(limits.body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ))
        .layer(CatchPanicLayer::custom(|_panic| {
            tracing::error!("handler panicked");
            Problem::internal().into_response()
        }))
        .layer(axum::middleware::map_response(problem_for_bare_errors))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(|_req: &Request<_>, _span: &Span| tracing::debug!("request started"))
                .on_response(|res: &Response<_>, latency: Duration, _span: &Span| {
                    tracing::info!(
                        status = res.status().as_u16(),
                        latency_ms = latency.as_secs_f64() * 1e3,
                        "request finished"
                    )
                })
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeRequestUuid))
}

fn request_span<B>(req: &Request<B>) -> Span {
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let span = tracing::info_span!(
        "request",
        request_id,
        method = %req.method(),
        path = req.uri().path(),
    );
    // A caller that is being traced sends `traceparent`: this request joins its trace.
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    crate::telemetry::continue_trace(&span, traceparent);
    span
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found")
        .detail("no such route; see the service README for the API")
}

async fn problem_for_bare_errors(response: axum::response::Response) -> axum::response::Response {
    let status = response.status();
    let is_error = status.is_client_error() || status.is_server_error();
    // Bodies made by layers (tower-http's 413, a timeout, a router 405) are empty or
    // plain text; JSON bodies come from handlers and are left alone.
    let is_bare = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|ct| ct.as_bytes().starts_with(b"text/plain"));
    if !is_error || !is_bare {
        return response;
    }
    let (parts, _empty_body) = response.into_parts();
    let mut problem = Problem::from_status(status).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
            problem.headers_mut().insert(name, value.clone());
        }
    }
    problem
}

/// The request id of the current request, for handlers that pass it on (e.g. to the
/// payment provider, so both sides' logs share one id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let id = parts
            .headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        Ok(RequestId(id.to_owned()))
    }
}
