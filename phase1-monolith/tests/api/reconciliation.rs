//! Many concurrent orders against a provider that fails 30 % of the time: every
//! client gets an answer, and in the end our books agree with the provider's.

use crate::support::books::{Told, assert_books_balance};
use crate::support::{Backend, order_body, spawn_app_with};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

async fn two_hundred_concurrent_orders_with_failures_all_reconcile_with_the_provider(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |s| {
        s.provider.failure_rate = 0.3;
        s.provider.decline_rate = 0.05;
        s.provider.latency = "0ms..20ms".parse().unwrap();
        s.payment.attempt_timeout = Duration::from_secs(1);
        s.payment.deadline = Duration::from_secs(2);
        s.payment.max_retries = 2;
        s.reconcile_after = Duration::from_millis(2500);
        s.db_max_connections = 10;
        s.request_timeout = Duration::from_secs(30);
    })
    .await;
    let skus = [
        "pizza-margherita",
        "burger-classic",
        "ramen-shoyu",
        "fries",
        "cola",
    ];
    let requests = (0..200).map(|i| {
        let body = order_body(
            &format!("customer-{i}"),
            &[(skus[i % skus.len()], 1 + (i % 3) as i64)],
        );
        let app = &app;
        async move {
            let response = app.post_order(&body).await;
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    });
    let responses = futures::future::join_all(requests).await;

    let mut told = Vec::new();
    let mut in_doubt = 0;
    for (status, body) in &responses {
        match *status {
            StatusCode::CREATED => told.push(Told {
                order_id: body["id"].as_str().unwrap().to_owned(),
                status: body["status"].as_str().unwrap().to_owned(),
            }),
            StatusCode::ACCEPTED => in_doubt += 1,
            other => panic!("every order must be answered 201 or 202, got {other}: {body}"),
        }
    }
    app.wait_until_settled(Duration::from_secs(60)).await;
    let orders = app.stored_orders().await;
    assert_eq!(orders.len(), 200);
    let (paid, cancelled) = assert_books_balance(&orders, &app.ledger().await, &told);
    assert_eq!(paid + cancelled, 200);
    assert!(
        paid > 150,
        "with 5 % declines most orders are paid (paid {paid})"
    );
    eprintln!(
        "200 orders: {paid} paid, {cancelled} cancelled, {in_doubt} were in doubt and reconciled"
    );
    app.stop().await;
}

crate::on_both_backends!(
    two_hundred_concurrent_orders_with_failures_all_reconcile_with_the_provider
);
