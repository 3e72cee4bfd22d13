//! Timeouts, retries, idempotency keys at the provider, and the circuit breaker.

use crate::support::books::{Told, assert_books_balance};
use crate::support::{Backend, order_body, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// Every attempt times out (100 ms) before the provider answers (300 ms) — but the
/// provider charges before answering.
fn timeouts_shorter_than_latency(s: &mut phase1_monolith::config::Settings, idempotency: bool) {
    s.provider.latency = "300ms".parse().unwrap();
    s.payment.attempt_timeout = Duration::from_millis(100);
    s.payment.max_retries = 3;
    s.payment.deadline = Duration::from_secs(3);
    s.payment.idempotency = idempotency;
    s.reconcile_after = Duration::from_millis(3500);
}

async fn retries_without_idempotency_keys_charge_the_customer_once_per_attempt(backend: Backend) {
    let app = spawn_app_with(backend, |s| timeouts_shorter_than_latency(s, false)).await;
    let response = app
        .post_order(&order_body("alice", &[("pizza-diavola", 1)]))
        .await;
    assert_eq!(
        response.status(),
        StatusCode::ACCEPTED,
        "every attempt timed out: outcome unknown"
    );
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["status"], "placed");

    let ledger = app.ledger().await;
    let id = order["id"].as_str().unwrap();
    assert_eq!(ledger.requests_received, 4, "1 attempt + 3 retries");
    assert_eq!(
        ledger.duplicate_charges().get(id),
        Some(&4),
        "the lesson: each timed-out attempt was a real charge"
    );
    app.stop().await;
}

async fn with_idempotency_keys_a_timeout_shorter_than_the_latency_charges_once(backend: Backend) {
    let app = spawn_app_with(backend, |s| timeouts_shorter_than_latency(s, true)).await;
    let response = app
        .post_order(&order_body("alice", &[("pizza-diavola", 1)]))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let order: Value = response.json().await.unwrap();

    let ledger = app.ledger().await;
    assert_eq!(
        ledger.requests_received, 4,
        "the client retried just as often"
    );
    assert_eq!(ledger.charges.len(), 1, "but the provider charged once");
    assert!(ledger.duplicate_charges().is_empty());

    // The order was left in doubt; the reconciler asks the provider and settles it.
    app.wait_until_settled(Duration::from_secs(15)).await;
    let settled: Value = app
        .get(&format!("/orders/{}", order["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(settled["status"], "paid");
    assert_eq!(
        settled["payment_id"].as_str(),
        Some(ledger.charges[0].charge_id.as_str())
    );
    assert_books_balance(&app.stored_orders().await, &app.ledger().await, &[]);
    app.stop().await;
}

async fn only_retryable_failures_are_retried_and_in_doubt_orders_are_settled_later(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |s| {
        s.provider.failure_rate = 1.0;
        s.payment.max_retries = 2;
        s.payment.deadline = Duration::from_secs(1);
        s.reconcile_after = Duration::from_millis(1500);
    })
    .await;
    let response = app
        .post_order(&order_body("erin", &[("salad-caesar", 1)]))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        app.ledger().await.requests_received,
        3,
        "503s are retried: 1 + 2 retries"
    );
    assert!(app.ledger().await.charges.is_empty());

    // The provider recovers; nobody resends the request, yet the order gets paid.
    app.provider_control(json!({"failure_rate": 0.0})).await;
    app.wait_until_settled(Duration::from_secs(15)).await;
    let (paid, cancelled) =
        assert_books_balance(&app.stored_orders().await, &app.ledger().await, &[]);
    assert_eq!((paid, cancelled), (1, 0));
    app.stop().await;
}

async fn the_breaker_opens_under_a_dead_provider_fails_fast_and_recovers(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.provider.failure_rate = 1.0;
        s.payment.max_retries = 1;
        s.payment.deadline = Duration::from_secs(1);
        s.payment.breaker_window = 10;
        s.payment.breaker_min_calls = 5;
        s.payment.breaker_cooldown = Duration::from_secs(2);
        s.reconcile_after = Duration::from_millis(1500);
    })
    .await;
    let mut told = Vec::new();
    let mut orders_until_open = 0;
    while app.ready().await["payment_breaker"] != "open" {
        orders_until_open += 1;
        assert!(orders_until_open <= 10, "the breaker never opened");
        let response = app.post_order(&order_body("frank", &[("fries", 1)])).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let ready = app.ready().await;
    assert_eq!(
        ready["status"], "degraded",
        "still serving: orders are accepted and settled later"
    );

    // Open: orders are still accepted, but the provider is not called at all.
    let calls_before = app.ledger().await.requests_received;
    for _ in 0..3 {
        let response = app.post_order(&order_body("frank", &[("fries", 1)])).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let order: Value = response.json().await.unwrap();
        assert_eq!(order["status"], "placed");
    }
    assert_eq!(
        app.ledger().await.requests_received,
        calls_before,
        "an open breaker fails fast"
    );

    // The provider recovers: after the cooldown a probe closes the breaker and the
    // reconciler settles every order that was left in doubt.
    app.provider_control(json!({"failure_rate": 0.0})).await;
    app.wait_until_settled(Duration::from_secs(20)).await;
    assert_eq!(app.ready().await["payment_breaker"], "closed");
    let response = app.post_order(&order_body("frank", &[("cola", 1)])).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    told.push(Told {
        order_id: order["id"].as_str().unwrap().to_owned(),
        status: "paid".into(),
    });
    let (paid, _) = assert_books_balance(&app.stored_orders().await, &app.ledger().await, &told);
    assert_eq!(paid, orders_until_open + 3 + 1);
    app.stop().await;
}

crate::on_both_backends!(
    retries_without_idempotency_keys_charge_the_customer_once_per_attempt,
    with_idempotency_keys_a_timeout_shorter_than_the_latency_charges_once,
    only_retryable_failures_are_retried_and_in_doubt_orders_are_settled_later,
    the_breaker_opens_under_a_dead_provider_fails_fast_and_recovers,
);
