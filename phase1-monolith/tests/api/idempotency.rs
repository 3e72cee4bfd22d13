//! `Idempotency-Key`: one order and one charge, however often (and however
//! concurrently) the same request arrives.

use crate::support::{Backend, order_body, spawn_app, spawn_app_with};
use phase1_monolith::orders::PlaceOrder;
use phase1_monolith::store::{Inserted, OrderStore};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

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

/// The first request with a key stored its order and then died before answering (a
/// crash). A retry of it must not create a second order: it gets 409 while the order
/// is in doubt, and the settled order once the reconciler has settled it.
async fn a_key_whose_first_request_never_answered_gets_409_then_the_settled_order(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |s| {
        s.provider.failure_rate = 1.0; // nothing can be settled yet
        s.payment.deadline = Duration::from_secs(1);
        s.reconcile_after = Duration::from_millis(1500);
    })
    .await;
    let body = order_body("heidi", &[("pizza-diavola", 1)]);
    let request: PlaceOrder = serde_json::from_value(body.clone()).unwrap();

    // Arrange the crash's leftovers: order + key stored, no response saved, long ago.
    let store = OrderStore::new(app.db.clone());
    let menu = store.menu().await.unwrap();
    let new_order =
        common::domain::NewOrder::price(request.customer_id.clone(), &request.items, &menu)
            .unwrap();
    let fingerprint = serde_json::to_string(&request).unwrap();
    let Inserted::Created(order) = store
        .insert(&new_order, Some(("crashed-key", &fingerprint)))
        .await
        .unwrap()
    else {
        panic!("fresh key")
    };
    sqlx::query("UPDATE idempotency_keys SET created_at = '2000-01-01T00:00:00.000000Z'")
        .execute(&app.db)
        .await
        .unwrap();

    let response = app.post_order_with_key(&body, "crashed-key").await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert!(response.headers().contains_key("retry-after"));
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "urn:ferriseats:problem:request-in-progress"
    );
    assert_eq!(problem["order_id"], order.id.to_string());

    app.provider_control(json!({"failure_rate": 0.0})).await;
    app.wait_until_settled(Duration::from_secs(15)).await;
    let response = app.post_order_with_key(&body, "crashed-key").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let settled: Value = response.json().await.unwrap();
    assert_eq!(settled["id"], order.id.to_string());
    assert_eq!(settled["status"], "paid");
    let again = app.post_order_with_key(&body, "crashed-key").await;
    assert_eq!(
        again.headers()["idempotent-replayed"],
        "true",
        "that answer was saved"
    );
    assert_eq!(app.order_count().await, 1);
    assert_eq!(app.ledger().await.charges.len(), 1);
    app.stop().await;
}

crate::on_both_backends!(
    a_key_whose_first_request_never_answered_gets_409_then_the_settled_order,
    a_repeated_request_replays_the_first_response,
    concurrent_identical_requests_create_one_order_and_one_charge,
    the_same_key_with_a_different_body_is_rejected,
    different_keys_are_different_orders,
);
