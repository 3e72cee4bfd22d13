//! Bad input gets an `application/problem+json` answer with the right status, and
//! nothing is stored for a rejected request.

use crate::support::{Backend, TestApp, order_body, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn assert_problem(
    response: reqwest::Response,
    status: StatusCode,
    type_suffix: &str,
) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    let kind = body["type"].as_str().unwrap();
    assert!(
        kind.ends_with(type_suffix),
        "type {kind} should end with {type_suffix}"
    );
    body
}

async fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(
        app.order_count().await,
        0,
        "a rejected request must not store an order"
    );
    assert_eq!(
        app.ledger().await.requests_received,
        0,
        "a rejected request must not reach the provider"
    );
}

async fn malformed_json_is_a_400_problem(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .post_raw(
            "/orders",
            "application/json",
            r#"{"customer_id": "a", "items": ["#,
        )
        .await;
    assert_problem(response, StatusCode::BAD_REQUEST, "malformed-json").await;
    assert_nothing_stored(&app).await;
    app.stop().await;
}

async fn invalid_orders_are_422_problems_that_store_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        (order_body("alice", &[("sushi", 1)]), "unknown-sku"),
        (
            order_body("alice", &[("pizza-margherita", 0)]),
            "invalid-body",
        ),
        (
            order_body("alice", &[("pizza-margherita", -2)]),
            "invalid-body",
        ),
        (
            order_body("alice", &[("pizza-margherita", 1_000_000)]),
            "invalid-body",
        ),
        (order_body("alice", &[]), "empty-order"),
        (order_body("", &[("cola", 1)]), "invalid-body"),
        (order_body(" alice", &[("cola", 1)]), "invalid-body"),
        // serde would take a struct's fields as an array, in order; the API does not.
        (
            json!(["alice", [{"sku": "cola", "qty": 1}]]),
            "invalid-body",
        ),
        (
            order_body("alice", &[("cola", 1), ("cola", 2)]),
            "invalid-order",
        ),
        (
            json!({"items": [{"sku": "cola", "qty": 1}]}),
            "invalid-body",
        ),
        (
            json!({"customer_id": "a", "items": [{"sku": "cola", "qty": "two"}]}),
            "invalid-body",
        ),
        (
            json!({"customer_id": "a", "items": [{"sku": "cola", "qty": 1}], "discount": 100}),
            "invalid-body",
        ),
    ];
    for (body, kind) in cases {
        let response = app.post_order(&body).await;
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, kind).await;
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}: no detail"
        );
    }
    assert_nothing_stored(&app).await;
    app.stop().await;
}

async fn every_unknown_sku_is_named_in_the_problem(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .post_order(&order_body(
            "alice",
            &[("sushi", 1), ("cola", 1), ("ramen-tonkotsu", 1)],
        ))
        .await;
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "unknown-sku").await;
    assert_eq!(problem["unknown_skus"], json!(["sushi", "ramen-tonkotsu"]));
    app.stop().await;
}

async fn oversized_bodies_are_413_problems(backend: Backend) {
    let app = spawn_app(backend).await;
    let huge = format!(
        r#"{{"customer_id": "{}", "items": []}}"#,
        "x".repeat(100 * 1024)
    );
    let response = app.post_raw("/orders", "application/json", huge).await;
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large").await;
    assert_nothing_stored(&app).await;
    app.stop().await;
}

async fn a_wrong_content_type_is_a_415_problem(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = order_body("alice", &[("cola", 1)]).to_string();
    let response = app.post_raw("/orders", "text/plain", body).await;
    assert_problem(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
    assert_nothing_stored(&app).await;
    app.stop().await;
}

async fn unknown_orders_routes_and_methods_are_problems(backend: Backend) {
    let app = spawn_app(backend).await;
    let unknown = uuid::Uuid::now_v7();
    assert_problem(
        app.get(&format!("/orders/{unknown}")).await,
        StatusCode::NOT_FOUND,
        "order-not-found",
    )
    .await;
    assert_problem(
        app.get("/orders/not-a-uuid").await,
        StatusCode::NOT_FOUND,
        "order-not-found",
    )
    .await;
    assert_problem(
        app.get("/no/such/route").await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    let delete = app
        .http
        .delete(format!("{}/orders", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.headers()["allow"], "POST");
    assert_problem(delete, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed").await;
    app.stop().await;
}

async fn a_malformed_idempotency_key_is_a_400_problem(backend: Backend) {
    let app = spawn_app(backend).await;
    let long_key = "k".repeat(300);
    let response = app
        .post_order_with_key(&order_body("alice", &[("cola", 1)]), &long_key)
        .await;
    assert_problem(response, StatusCode::BAD_REQUEST, "invalid-idempotency-key").await;
    assert_nothing_stored(&app).await;
    app.stop().await;
}

crate::on_both_backends!(
    malformed_json_is_a_400_problem,
    invalid_orders_are_422_problems_that_store_nothing,
    every_unknown_sku_is_named_in_the_problem,
    oversized_bodies_are_413_problems,
    a_wrong_content_type_is_a_415_problem,
    unknown_orders_routes_and_methods_are_problems,
    a_malformed_idempotency_key_is_a_400_problem,
);
