//! `Idempotency-Key`: one order and one charge, however often (and however
//! concurrently) the same request arrives.

use crate::support::{Backend, order_body, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use serde_json::Value;

async fn a_repeated_request_replays_the_first_response(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = order_body("alice", &[("ramen-shoyu", 1)]);
    let first = app.post_order_with_key(&body, "key-1").await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_body = first.text().await.unwrap();

    let second = app.post_order_with_key(&body, "key-1").await;
    assert_eq!(second.status(), StatusCode::CREATED);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert_eq!(
        second.text().await.unwrap(),
        first_body,
        "byte-for-byte the first response"
    );

    assert_eq!(app.order_count().await, 1);
    assert_eq!(app.ledger().await.charges.len(), 1);
    app.stop().await;
}

async fn concurrent_identical_requests_create_one_order_and_one_charge(backend: Backend) {
    // A slow provider keeps the first request in flight while the others arrive.
    let app = spawn_app_with(backend, |s| s.provider.latency = "300ms".parse().unwrap()).await;
    let body = order_body("bob", &[("burger-classic", 2)]);
    let requests = (0..8).map(|_| app.post_order_with_key(&body, "same-key"));
    let responses = futures::future::join_all(requests).await;
    let mut bodies = Vec::new();
    for response in responses {
        assert_eq!(response.status(), StatusCode::CREATED);
        bodies.push(response.text().await.unwrap());
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "every caller sees the same order"
    );
    assert_eq!(app.order_count().await, 1);
    let ledger = app.ledger().await;
    assert_eq!(ledger.charges.len(), 1);
    assert_eq!(ledger.requests_received, 1, "the provider was called once");
    app.stop().await;
}

async fn the_same_key_with_a_different_body_is_rejected(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = app
        .post_order_with_key(&order_body("carol", &[("cola", 1)]), "key-x")
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let other = app
        .post_order_with_key(&order_body("carol", &[("cola", 2)]), "key-x")
        .await;
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = other.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "urn:ferriseats:problem:idempotency-key-reused"
    );
    assert_eq!(app.order_count().await, 1);
    assert_eq!(app.ledger().await.charges.len(), 1);
    app.stop().await;
}

async fn different_keys_are_different_orders(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = order_body("dave", &[("water", 1)]);
    for key in ["a", "b", "c"] {
        assert_eq!(
            app.post_order_with_key(&body, key).await.status(),
            StatusCode::CREATED
        );
    }
    assert_eq!(app.order_count().await, 3);
    assert_eq!(app.ledger().await.charges.len(), 3);
    app.stop().await;
}

crate::on_both_backends!(
    a_repeated_request_replays_the_first_response,
    concurrent_identical_requests_create_one_order_and_one_charge,
    the_same_key_with_a_different_body_is_rejected,
    different_keys_are_different_orders,
);
