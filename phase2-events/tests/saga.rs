//! The saga end to end: every service, the relays and the provider simulator on the
//! real broker, PostgreSQL and Redis; each test ends with the reconciliation checker.

use futures::StreamExt;
use phase2_events::flow::Service;
use phase2_events::testing::checker::check;
use phase2_events::testing::{Options, TestSystem};
use serde_json::{Value, json};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_are_delivered_or_cancelled_and_compensated() {
    // 20 % of cards are declined; only 3 tiramisu are left.
    let system = TestSystem::start(Options {
        decline_rate: 0.2,
        ..Options::default()
    })
    .await;
    system.set_stock("tiramisu", 3).await;
    let initial = system.stock().await;

    let mut accepted = Vec::new();
    for i in 0..30 {
        let items: &[(&str, u8)] = if i % 3 == 0 {
            &[("tiramisu", 1), ("cola", 2)]
        } else {
            &[("pizza-margherita", 1), ("fries", 1)]
        };
        accepted.push(system.place(items).await);
    }
    let report = check(&system, &accepted, &initial, LIMIT).await;
    assert!(
        report.delivered > 0,
        "some orders are delivered: {report:?}"
    );
    assert!(
        report.cancelled_stock > 0,
        "10 tiramisu orders, 3 in stock: {report:?}"
    );
    assert!(
        held_tiramisu(&system).await <= 3,
        "never more tiramisu than stock"
    );
    system.stop().await;
}

/// Compensation 1: the charge succeeded, then stock ran out → refund.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_taken_before_stock_ran_out_is_refunded() {
    let mut system = TestSystem::start(Options {
        services: &[
            Service::Order,
            Service::Payment,
            Service::Notification,
            Service::Delivery,
        ],
        ..Options::default()
    })
    .await;
    system.set_stock("tiramisu", 0).await;
    let initial = system.stock().await;
    let order = system.place(&[("tiramisu", 1)]).await;
    wait_for(
        &system.payments_db,
        "SELECT COUNT(*) FROM payments WHERE status = 'captured'",
    )
    .await;
    system.start_service(Service::Inventory).await; // answers: out of stock
    let report = check(&system, &[order], &initial, LIMIT).await;
    assert_eq!(
        (report.cancelled_stock, report.charges, report.refunded),
        (1, 1, 1)
    );
    wait_for(
        &system.payments_db,
        "SELECT COUNT(*) FROM payments WHERE status = 'refunded'",
    )
    .await;
    system.stop().await;
}

/// Compensation 2: stock was reserved, then the card was declined → release.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stock_reserved_before_a_declined_payment_is_released() {
    let mut system = TestSystem::start(Options {
        services: &[
            Service::Order,
            Service::Inventory,
            Service::Notification,
            Service::Delivery,
        ],
        decline_rate: 1.0,
        ..Options::default()
    })
    .await;
    let initial = system.stock().await;
    let order = system.place(&[("fries", 3)]).await;
    wait_for(
        &system.inventory_db,
        "SELECT COUNT(*) FROM reservations WHERE status = 'reserved'",
    )
    .await;
    assert_eq!(
        system.stock().await["fries"],
        initial["fries"] - 3,
        "reserved"
    );
    system.start_service(Service::Payment).await; // declines
    let report = check(&system, &[order], &initial, LIMIT).await;
    assert_eq!(report.cancelled_payment, 1);
    wait_for(
        &system.inventory_db,
        "SELECT COUNT(*) FROM reservations WHERE status = 'released'",
    )
    .await;
    assert_eq!(system.stock().await["fries"], initial["fries"], "released");
    system.stop().await;
}

/// Waits until `sql` (a count) is at least 1.
async fn wait_for(db: &sqlx::AnyPool, sql: &'static str) {
    use sqlx::Row;
    let started = std::time::Instant::now();
    while sqlx::query(sql)
        .fetch_one(db)
        .await
        .unwrap()
        .get::<i64, _>(0)
        < 1
    {
        assert!(started.elapsed() < LIMIT, "never true: {sql}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_orders_for_the_last_items_never_oversell() {
    let system = TestSystem::start(Options::default()).await;
    system.set_stock("tiramisu", 5).await;
    let initial = system.stock().await;
    let placing = (0..25).map(|_| system.place(&[("tiramisu", 1)]));
    let accepted: Vec<_> = futures::future::join_all(placing).await;
    let report = check(&system, &accepted, &initial, LIMIT).await;
    assert_eq!(report.delivered, 5, "exactly the 5 in stock: {report:?}");
    assert_eq!(report.cancelled_stock, 20, "{report:?}");
    assert_eq!(system.stock().await["tiramisu"], 0);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_keeps_phase_1_contract_with_202_and_idempotency_keys() {
    let system = TestSystem::start(Options {
        services: &[Service::Order],
        ..Options::default()
    })
    .await;
    let body = json!({"customer_id": "cust-7", "items": [{"sku": "fries", "qty": 2}]});
    let (first_status, first) = system.post_order(&body, Some("key-1")).await;
    let (again_status, again) = system.post_order(&body, Some("key-1")).await;
    assert_eq!(first_status, 202);
    assert_eq!(first["status"], "placed");
    assert_eq!(
        (again_status, &again),
        (202, &first),
        "replayed, same order"
    );
    let (reused, problem) = system
        .post_order(
            &json!({"customer_id": "cust-7", "items": [{"sku": "cola", "qty": 1}]}),
            Some("key-1"),
        )
        .await;
    assert_eq!(reused, 422, "{problem}");
    assert_eq!(
        problem["type"],
        "urn:ferriseats:problem:idempotency-key-reused"
    );

    let (invalid, problem) = system
        .post_order(
            &json!({"customer_id": "cust-7", "items": [{"sku": "caviar", "qty": 1}]}),
            None,
        )
        .await;
    assert_eq!(invalid, 422);
    assert_eq!(problem["unknown_skus"], json!(["caviar"]));

    // One order, one OrderPlaced in the outbox, in the same transaction.
    use sqlx::Row;
    let counts = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM orders) AS orders, \
                (SELECT COUNT(*) FROM outbox WHERE event_type = 'OrderPlaced') AS events",
    )
    .fetch_one(&system.orders_db)
    .await
    .unwrap();
    assert_eq!(counts.get::<i64, _>("orders"), 1);
    assert_eq!(counts.get::<i64, _>("events"), 1);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_websocket_client_sees_every_status_live_until_delivered() {
    let system = TestSystem::start(Options::default()).await;
    let addr = system.notification_addr.unwrap();
    match tokio_tungstenite::connect_async(format!("ws://{addr}/orders/not-an-id/live")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("a bad order id is refused with 404, got {other:?}"),
    }
    let placed = system.place(&[("cola", 1)]).await;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/orders/{placed}/live"))
            .await
            .expect("WebSocket upgrade");
    let mut statuses = Vec::new();
    let reading = async {
        while let Some(Ok(message)) = socket.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).unwrap();
                statuses.push(value["status"].as_str().unwrap().to_owned());
            }
        }
    };
    tokio::time::timeout(LIMIT, reading)
        .await
        .expect("the stream closes once the order is delivered");
    // Whatever the first status seen (the order may have moved on before the socket
    // opened), the rest follow the state machine, once each, to `delivered`.
    let path = common::domain::OrderStatus::HAPPY_PATH.map(|s| s.as_str());
    let first = path.iter().position(|s| *s == statuses[0]).unwrap();
    assert_eq!(
        statuses,
        path[first..].to_vec(),
        "every change, in order, once"
    );
    system.stop().await;
}

/// Tiramisu held by reservations.
async fn held_tiramisu(system: &TestSystem) -> i64 {
    phase2_events::testing::checker::held_reservations(&system.inventory_db)
        .await
        .values()
        .flatten()
        .filter(|(sku, _)| sku == "tiramisu")
        .map(|(_, qty)| qty)
        .sum()
}

/// A slow provider does not serialize the pipeline. With the provider and client as
/// `phase2-events all` runs them (answers in 2–5 s, 30 % failures, 5 % declines),
/// 20 orders placed at once must all be final, with consistent books, within 30 s.
/// Handled one message at a time, the payment service alone would need at least
/// 20 × 2 s = 40 s; handled concurrently (different orders, each order's events in
/// sequence) it needs a few provider round trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_orders_with_the_default_provider_are_all_final_within_30_s() {
    let system = TestSystem::start(Options {
        learner_defaults: true,
        ..Options::default()
    })
    .await;
    let initial = system.stock().await;
    let placed =
        futures::future::join_all((0..20).map(|_| system.place(&[("pizza-margherita", 1)]))).await;
    let report = check(&system, &placed, &initial, Duration::from_secs(30)).await;
    assert_eq!(
        report.delivered + report.cancelled_payment + report.cancelled_stock,
        20,
        "{report:?}"
    );
    system.stop().await;
}
