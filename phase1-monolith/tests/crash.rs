//! Lesson: a crash in the middle of a payment leaves in-doubt state that must be
//! reconciled. This test runs the real binaries: the payment provider in its own
//! process, and the order API, which it kills with SIGKILL (`kill -9`) while
//! payments are in flight. After a restart on the same database, every order must end
//! `paid` or `cancelled` in agreement with the provider's ledger.

#[path = "support/mod.rs"]
mod support;

use serde_json::Value;
use std::time::Duration;
use support::books::{Told, assert_books_balance, stored_orders, wait_until_settled};
use support::process::start;
use support::{Backend, TestDb, fetch_ledger, order_body};

async fn kill_9_during_payments_then_restart_reconciles_every_order(backend: Backend) {
    let db = TestDb::create(backend).await;
    let provider = start([
        "provider",
        "--provider-addr",
        "127.0.0.1:0",
        "--payment-latency",
        "300ms..900ms",
        "--payment-failure-rate",
        "0.3",
        "--payment-decline-rate",
        "0.05",
    ])
    .await;
    let api_args = |deadline: &'static str, reconcile_after: &'static str| {
        vec![
            "--addr".to_owned(),
            "127.0.0.1:0".into(),
            "--database-url".into(),
            db.url.clone(),
            "--payment-url".into(),
            provider.url.clone(),
            "--payment-deadline".into(),
            deadline.into(),
            "--reconcile-after".into(),
            reconcile_after.into(),
            "--reconcile-interval".into(),
            "200ms".into(),
            "--request-timeout".into(),
            "60s".into(),
        ]
    };
    let mut api = start(api_args("30s", "40s")).await;

    // 40 customers order at once.
    let http = reqwest::Client::new();
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (http, url) = (http.clone(), api.url.clone());
        clients.spawn(async move {
            let response = http
                .post(format!("{url}/orders"))
                .json(&order_body(&format!("c{i}"), &[("fries", 1)]))
                .send()
                .await
                .ok()?;
            (response.status() == 201).then_some(())?;
            let body: Value = response.json().await.ok()?;
            Some(Told {
                order_id: body["id"].as_str()?.to_owned(),
                status: body["status"].as_str()?.to_owned(),
            })
        });
    }
    // Kill -9 once the provider has charged some of them, with others mid-call.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fetch_ledger(&http, &provider.url).await.charges.len() < 12 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the provider never charged anything"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.child.start_kill().expect("SIGKILL");
    api.child.wait().await.unwrap();
    let told: Vec<Told> = clients.join_all().await.into_iter().flatten().collect();

    let pool = common::db::connect(&db.url, 2).await.unwrap();
    let in_doubt = support::count(
        &pool,
        "SELECT COUNT(*) AS n FROM orders WHERE status = 'placed'",
    )
    .await;
    assert!(in_doubt > 0, "the crash should have left orders in doubt");

    // Restart on the same database; the reconciler settles what the crash left behind.
    let restarted = start(api_args("1s", "1500ms")).await;
    wait_until_settled(&pool, Duration::from_secs(60)).await;

    let orders = stored_orders(&pool).await;
    let ledger = fetch_ledger(&http, &provider.url).await;
    let (paid, cancelled) = assert_books_balance(&orders, &ledger, &told);
    eprintln!(
        "{} orders stored, {in_doubt} in doubt after kill -9, now {paid} paid and {cancelled} cancelled; {} clients had a final answer",
        orders.len(),
        told.len()
    );
    drop(restarted);
    drop(provider);
    pool.close().await;
    db.drop_database().await;
}

on_both_backends!(kill_9_during_payments_then_restart_reconciles_every_order);
