//! The happy path, declines, and the order of operations.

use crate::support::{Backend, order_body, spawn_app, spawn_app_with};
use common::domain::{CustomerId, NewOrder, OrderEvent, OrderStatus};
use common::payment::{ChargeStatus, PaymentOutcome};
use phase1_monolith::store::{ApplyError, Inserted, OrderStore};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

async fn both_apis_serve_their_checked_in_openapi_document(backend: Backend) {
    let app = spawn_app(backend).await;
    for (base, file) in [
        (&app.address, "orders.json"),
        (&app.provider_url, "provider.json"),
    ] {
        let response = app
            .http
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/json");
        let served = response.text().await.unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("openapi")
            .join(file);
        assert_eq!(
            served,
            std::fs::read_to_string(&path).unwrap(),
            "{base}/openapi.json differs from {}",
            path.display()
        );
    }
    app.stop().await;
}

async fn the_menu_lists_what_can_be_ordered(backend: Backend) {
    let app = spawn_app(backend).await;
    let menu: Vec<Value> = app.get("/menu").await.json().await.unwrap();
    assert_eq!(menu.len(), 9);
    let pizza = menu
        .iter()
        .find(|item| item["sku"] == "pizza-margherita")
        .unwrap();
    assert_eq!(pizza["price_cents"], 1150);
    assert_eq!(pizza["name"], "Pizza Margherita");
    app.stop().await;
}

async fn an_order_is_priced_paid_and_readable(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .post_order(&order_body(
            "alice",
            &[("pizza-margherita", 2), ("cola", 1)],
        ))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["status"], "paid");
    assert_eq!(order["total_cents"], 2 * 1150 + 290);
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        location,
        format!("/orders/{}", order["id"].as_str().unwrap())
    );

    let fetched: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(fetched, order, "GET returns what POST answered");

    let ledger = app.ledger().await;
    assert_eq!(ledger.charges.len(), 1);
    let charge = &ledger.charges[0];
    assert_eq!(charge.status, ChargeStatus::Captured);
    assert_eq!(charge.amount_cents, 2590);
    assert_eq!(
        Some(charge.charge_id.as_str()),
        order["payment_id"].as_str()
    );
    assert_eq!(
        charge.idempotency_key.as_deref(),
        order["id"].as_str(),
        "the order id is the provider key"
    );
    app.stop().await;
}

async fn a_declined_card_cancels_the_order_without_retrying(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.provider.decline_rate = 1.0).await;
    let response = app.post_order(&order_body("bob", &[("fries", 1)])).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["cancellation_reason"], "payment_failed");
    let ledger = app.ledger().await;
    assert_eq!(
        ledger.requests_received, 1,
        "a decline is an answer, not a failure: no retry"
    );
    assert_eq!(ledger.charges[0].status, ChargeStatus::Declined);
    app.stop().await;
}

async fn the_order_is_stored_before_the_provider_is_called(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.provider.latency = "400ms".parse().unwrap()).await;
    let body = order_body("carol", &[("tiramisu", 1)]);
    let request = app.post_order(&body);
    let watcher = async {
        // While the payment call is in flight (400 ms), the order must already be in
        // the database — and the provider must not have seen any other order id.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let placed = app
                .count("SELECT COUNT(*) AS n FROM orders WHERE status = 'placed'")
                .await;
            if placed == 1 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order never appeared as placed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (response, ()) = tokio::join!(request, watcher);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["status"], "paid");
    app.stop().await;
}

async fn health_is_liveness_and_ready_reports_dependencies(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    let ready = app.get("/ready").await;
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["database"], "up");
    assert_eq!(ready["payment_breaker"], "closed");
    assert_eq!(ready["status"], "ready");
    app.stop().await;
}

async fn responses_carry_the_callers_request_id(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .http
        .get(format!("{}/menu", app.address))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    let generated = app.get("/menu").await;
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "a request id is generated when none is sent: {id}"
    );
    let order: Value = app
        .http
        .post(format!("{}/orders", app.address))
        .header("x-request-id", "order-req-7")
        .json(&order_body("dave", &[("water", 1)]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ledger = app.ledger().await;
    assert_eq!(ledger.charges[0].order_id, order["id"].as_str().unwrap());
    assert_eq!(
        ledger.charges[0].request_id.as_deref(),
        Some("order-req-7"),
        "forwarded to the provider"
    );
    app.stop().await;
}

/// The request handler and the reconciler may both try to settle one order. The
/// `version` column lets exactly one of them win; the loser adopts the winner's result.
async fn of_two_concurrent_settlements_exactly_one_wins(backend: Backend) {
    let app = spawn_app(backend).await;
    let store = OrderStore::new(app.db.clone());
    let menu = store.menu().await.unwrap();
    let items = [common::domain::LineItem {
        sku: common::domain::Sku::parse("cola").unwrap(),
        qty: common::domain::Quantity::new(1).unwrap(),
    }];
    let new_order = NewOrder::price(CustomerId::parse("ivan").unwrap(), &items, &menu).unwrap();
    let Inserted::Created(snapshot) = store.insert(&new_order, None).await.unwrap() else {
        unreachable!()
    };

    let winner = store
        .apply(&snapshot, OrderEvent::PaymentSucceeded, Some("ch_winner"))
        .await
        .unwrap();
    assert_eq!(winner.status, OrderStatus::Paid);
    match store
        .apply(&snapshot, OrderEvent::PaymentFailed, None)
        .await
    {
        Err(ApplyError::Stale(current)) => assert_eq!(current.status, OrderStatus::Paid),
        other => panic!("the second settlement must lose, got {other:?}"),
    }
    let declined = PaymentOutcome::Declined {
        charge_id: None,
        reason: "late".into(),
    };
    let settled = phase1_monolith::workflow::settle(&store, snapshot, &declined)
        .await
        .unwrap();
    assert_eq!(
        settled.status,
        OrderStatus::Paid,
        "the loser adopts the winner's result"
    );
    assert_eq!(settled.payment_id.as_deref(), Some("ch_winner"));
    app.stop().await;
}

crate::on_both_backends!(
    of_two_concurrent_settlements_exactly_one_wins,
    the_menu_lists_what_can_be_ordered,
    an_order_is_priced_paid_and_readable,
    a_declined_card_cancels_the_order_without_retrying,
    the_order_is_stored_before_the_provider_is_called,
    health_is_liveness_and_ready_reports_dependencies,
    responses_carry_the_callers_request_id,
    both_apis_serve_their_checked_in_openapi_document,
);

/// Readiness needs the database and nothing else: drop the database under a running
/// app and `/ready` answers 503 while `/health` stays 200. (PostgreSQL only: an open
/// SQLite file cannot be taken away from a running process.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_fails_when_the_database_is_gone_but_health_does_not() {
    let app = spawn_app(Backend::Postgres).await;
    assert_eq!(app.get("/ready").await.status(), StatusCode::OK);
    let name: String = {
        use sqlx::Row;
        sqlx::query("SELECT current_database()::text AS name")
            .fetch_one(&app.db)
            .await
            .unwrap()
            .get("name")
    };
    let admin = common::db::connect(&common::testing::postgres_admin_url(), 1)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;

    let ready = app.get("/ready").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["database"], "down");
    assert_eq!(ready["status"], "not_ready");
    assert_eq!(
        app.get("/health").await.status(),
        StatusCode::OK,
        "liveness does not depend on the database"
    );
    app.stop().await;
}
