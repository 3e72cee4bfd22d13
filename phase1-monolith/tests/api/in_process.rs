//! The router called in-process, without a socket or a server: `oneshot` requests
//! over phase 1's router on an in-memory SQLite database, the way the axum examples
//! test (`examples/testing`). Each rejection path answers its status and
//! problem+json type before any handler code touches the store or the provider —
//! these tests prove it in milliseconds; `validation.rs` proves the same over HTTP
//! on both databases.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::http::HttpLimits;
use common::payment::{PaymentClient, PaymentClientConfig};
use phase1_monolith::startup::{AppState, migrator, router};
use phase1_monolith::store::OrderStore;
use serde_json::{Value, json};
use std::time::Duration;
use tower::ServiceExt;

const BODY_LIMIT: usize = 64 * 1024;

/// The router on a fresh in-memory database (one connection: each SQLite
/// connection to `:memory:` would be a database of its own). The provider's address
/// is one nobody listens on: no path tested here may reach it.
async fn app() -> (Router, OrderStore) {
    let pool = common::db::connect("sqlite::memory:", 1).await.unwrap();
    migrator().run(&pool).await.unwrap();
    let store = OrderStore::new(pool);
    let state = AppState {
        store: store.clone(),
        payment: PaymentClient::new("http://127.0.0.1:9", PaymentClientConfig::default()),
        replay_wait: Duration::from_secs(1),
    };
    let limits = HttpLimits {
        body_limit: BODY_LIMIT,
        request_timeout: Duration::from_secs(5),
    };
    (router(state, limits), store)
}

fn post(content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post("/orders")
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap()
}

/// Sends `request`, checks the status and that the answer is a problem+json whose
/// type ends with `kind`, and returns the problem.
async fn problem(app: Router, request: Request<Body>, status: StatusCode, kind: &str) -> Value {
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let problem: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(problem["status"], status.as_u16());
    let type_ = problem["type"].as_str().unwrap();
    assert!(type_.ends_with(kind), "type {type_} should end with {kind}");
    problem
}

async fn stored(store: &OrderStore) -> i64 {
    use sqlx::Row;
    sqlx::query("SELECT COUNT(*) FROM orders")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn malformed_json_is_a_400_problem_in_process() {
    let (app, store) = app().await;
    let request = post("application/json", r#"{"customer_id": "a", "items": ["#);
    problem(app, request, StatusCode::BAD_REQUEST, "malformed-json").await;
    assert_eq!(stored(&store).await, 0);
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_problem_in_process() {
    let (app, store) = app().await;
    let huge = format!(
        r#"{{"customer_id": "{}", "items": []}}"#,
        "x".repeat(BODY_LIMIT + 1)
    );
    let request = post("application/json", huge);
    problem(
        app,
        request,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
    )
    .await;
    assert_eq!(stored(&store).await, 0);
}

#[tokio::test]
async fn a_body_that_is_not_json_by_its_content_type_is_a_415_problem_in_process() {
    let (app, store) = app().await;
    let body = json!({"customer_id": "alice", "items": [{"sku": "cola", "qty": 1}]});
    let request = post("text/plain", body.to_string());
    problem(
        app,
        request,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
    assert_eq!(stored(&store).await, 0);
}

#[tokio::test]
async fn an_unknown_sku_and_an_empty_order_are_422_problems_in_process() {
    let (app, store) = app().await;
    let unknown = json!({"customer_id": "alice", "items": [{"sku": "sushi", "qty": 1}]});
    let found = problem(
        app.clone(),
        post("application/json", unknown.to_string()),
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown-sku",
    )
    .await;
    assert_eq!(found["unknown_skus"], json!(["sushi"]));
    let empty = json!({"customer_id": "alice", "items": []});
    problem(
        app.clone(),
        post("application/json", empty.to_string()),
        StatusCode::UNPROCESSABLE_ENTITY,
        "empty-order",
    )
    .await;
    let zero = json!({"customer_id": "alice", "items": [{"sku": "cola", "qty": 0}]});
    problem(
        app,
        post("application/json", zero.to_string()),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-body",
    )
    .await;
    assert_eq!(stored(&store).await, 0);
}
