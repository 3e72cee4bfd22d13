//! OpenAPI 3.1 documents generated from the code, served at `GET /openapi.json`.
//!
//! Every handler carries a `#[utoipa::path(...)]` annotation (its method, path,
//! parameters and every status it can answer with) and every body type derives or
//! implements `utoipa::ToSchema`. A service registers its handlers on a
//! [`utoipa_axum::router::OpenApiRouter`] — `routes!(handler)` adds the route *and*
//! its documentation in one step, so the two cannot drift apart — then [`serve`]
//! splits the router from the document and adds `GET /openapi.json`.
//!
//! Each phase checks its documents in (`openapi/*.json`) and a test compares them
//! with what the code generates ([`assert_checked_in`]): a changed handler without
//! an updated file fails the build, and the file in the repository is always what a
//! client generator or an API fuzzer (Schemathesis) should be pointed at.

use super::Problem;
use axum::Router;
use axum::routing::get;
use std::path::Path;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

/// Set (to anything) to rewrite the checked-in documents instead of comparing them.
pub const UPDATE_ENV: &str = "FERRISEATS_UPDATE_OPENAPI";

/// Splits `router` into the axum router and its document, gives the document its
/// title and description, and serves it at `GET /openapi.json`.
pub fn serve<S>(router: OpenApiRouter<S>, title: &str, description: &str) -> (Router<S>, OpenApi)
where
    S: Clone + Send + Sync + 'static,
{
    let (router, mut doc) = router.split_for_parts();
    doc.info.title = title.to_owned();
    doc.info.description = Some(description.to_owned());
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.info.license = None;
    doc.info.contact = None;
    // Serialized once; each request shares the bytes.
    let json = axum::body::Bytes::from(to_json(&doc));
    let router = router.route(
        "/openapi.json",
        get(move || async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                json,
            )
        }),
    );
    (router, doc)
}

/// The document as checked in: pretty JSON with a final newline.
pub fn to_json(doc: &OpenApi) -> String {
    let mut json = doc
        .to_pretty_json()
        .expect("an OpenAPI document serializes");
    json.push('\n');
    json
}

/// Fails (with the command that fixes it) when `file` is not exactly the document
/// the code generates; with `FERRISEATS_UPDATE_OPENAPI=1` rewrites the file instead.
pub fn assert_checked_in(doc: &OpenApi, file: &Path) {
    let generated = to_json(doc);
    if std::env::var_os(UPDATE_ENV).is_some() {
        std::fs::write(file, &generated).expect("write the OpenAPI document");
        return;
    }
    let checked_in = std::fs::read_to_string(file).unwrap_or_default();
    if checked_in != generated {
        let first_difference = checked_in
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| checked_in.lines().count().min(generated.lines().count()));
        panic!(
            "{} is not what the code generates (first difference at line {}).\n\
             The handlers or their types changed; regenerate it and review the diff:\n    \
             {UPDATE_ENV}=1 cargo test --workspace --test openapi\n",
            file.display(),
            first_difference + 1,
        );
    }
}

/// What any handler taking a JSON body can answer before it runs ([`super::ApiJson`]
/// and the body limit), documented once: list `JsonBodyProblems` in `responses(...)`.
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)] // describes responses for the OpenAPI document; never built
pub enum JsonBodyProblems {
    /// Malformed JSON, or a malformed header (such as `Idempotency-Key`).
    #[response(status = 400, content_type = "application/problem+json")]
    Malformed(Problem),
    /// The body is larger than the limit.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// Not `Content-Type: application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    NotJson(Problem),
}

/// What every route of an order API can answer whatever it does, documented once.
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)] // describes responses for the OpenAPI document; never built
pub enum ServerProblems {
    /// Unexpected: the cause is in the log, under the request id.
    #[response(status = 500, content_type = "application/problem+json")]
    Unexpected(Problem),
    /// The request took longer than `--request-timeout`.
    #[response(status = 503, content_type = "application/problem+json")]
    TimedOut(Problem),
}
