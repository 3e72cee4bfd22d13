//! Graceful shutdown: on SIGTERM the server stops accepting new connections, lets the
//! requests in flight finish — payment included — and exits 0.

#[path = "support/mod.rs"]
mod support;

use serde_json::Value;
use std::time::Duration;
use support::process::start;
use support::{Backend, TestDb, order_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_orders_finish_then_exits_cleanly() {
    let db = TestDb::create(Backend::Sqlite).await;
    let mut api = start([
        "--addr",
        "127.0.0.1:0",
        "--provider-addr",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
        "--payment-failure-rate",
        "0",
        "--payment-decline-rate",
        "0",
        "--payment-latency",
        "1s",
    ])
    .await;
    let http = reqwest::Client::new();
    let in_flight = tokio::spawn({
        let (http, url) = (http.clone(), api.url.clone());
        async move {
            http.post(format!("{url}/orders"))
                .json(&order_body("grace", &[("cola", 1)]))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await; // the payment call is under way
    api.terminate();

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.unwrap();
    assert_eq!(
        order["status"], "paid",
        "the payment finished during the drain"
    );

    let exit = tokio::time::timeout(Duration::from_secs(10), api.child.wait())
        .await
        .expect("exits after draining")
        .unwrap();
    assert!(exit.success(), "exit status {exit}");
    assert!(
        http.get(format!("{}/health", api.url))
            .send()
            .await
            .is_err(),
        "no longer accepting"
    );
    db.drop_database().await;
}
