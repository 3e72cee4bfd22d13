//! The no-loss checker (`phase2_events::testing::checker`) is itself tested: on a
//! healthy system its books balance. Then each rule is broken on purpose in the
//! stores themselves (an order left unfinished, stock gone missing, a notification
//! sent twice, an event stuck in an outbox, an order charged twice), and the checker
//! must name that problem, and once it is repaired the books must balance again. A checker that cannot fail would let every chaos
//! scenario pass.

use phase2_events::testing::checker::{self, inspect};
use phase2_events::testing::{Options, TestSystem};
use redis::AsyncCommands;
use std::collections::BTreeMap;
use std::time::Duration;

/// `inspect` must report a problem containing `expected` (a broken rule may break
/// others with it: an order that never finished also holds a reservation that no
/// delivered order explains).
async fn assert_names_problem(
    system: &TestSystem,
    accepted: &[common::domain::OrderId],
    initial: &BTreeMap<String, i64>,
    expected: &str,
) {
    let (problems, _) = inspect(system, accepted, initial).await;
    assert!(
        problems.iter().any(|p| p.contains(expected)),
        "expected a problem about {expected:?}, got {problems:#?}"
    );
}

async fn assert_balanced(
    system: &TestSystem,
    accepted: &[common::domain::OrderId],
    initial: &BTreeMap<String, i64>,
) {
    let (problems, _) = inspect(system, accepted, initial).await;
    assert!(problems.is_empty(), "repaired, yet: {problems:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_checker_passes_a_healthy_system_and_names_each_broken_rule() {
    let system = TestSystem::start(Options::default()).await;
    let initial = system.stock().await;
    let mut accepted = Vec::new();
    for _ in 0..3 {
        accepted.push(system.place(&[("pizza-margherita", 1), ("cola", 2)]).await);
    }
    let report = checker::check(&system, &accepted, &initial, Duration::from_secs(60)).await;
    assert_eq!(report.delivered, 3, "{report:?}");
    let first = accepted[0].to_string();

    // 1. An accepted order that never finished.
    sqlx::query("UPDATE orders SET status = 'paid' WHERE id = $1")
        .bind(&first)
        .execute(&system.orders_db)
        .await
        .unwrap();
    assert_names_problem(&system, &accepted, &initial, "is still paid").await;
    sqlx::query("UPDATE orders SET status = 'delivered' WHERE id = $1")
        .bind(&first)
        .execute(&system.orders_db)
        .await
        .unwrap();
    assert_balanced(&system, &accepted, &initial).await;

    // 3. Stock taken without a reservation holding it.
    sqlx::query("UPDATE stock SET available = available - 1 WHERE sku = 'cola'")
        .execute(&system.inventory_db)
        .await
        .unwrap();
    assert_names_problem(&system, &accepted, &initial, "cola: 7 taken from stock").await;
    sqlx::query("UPDATE stock SET available = available + 1 WHERE sku = 'cola'")
        .execute(&system.inventory_db)
        .await
        .unwrap();
    assert_balanced(&system, &accepted, &initial).await;

    // 4. A notification sent twice.
    let key = phase2_events::services::notification::Keys::new(&system.topics).sent();
    let mut redis = redis::Client::open(system.settings.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis reachable (`cargo xtask up`)");
    let last: String = redis.lindex(&key, -1).await.unwrap();
    let _: () = redis.rpush(&key, &last).await.unwrap();
    assert_names_problem(&system, &accepted, &initial, "sent twice").await;
    let _: () = redis.rpop(&key, None).await.unwrap();
    assert_balanced(&system, &accepted, &initial).await;

    // 5. An event stuck in an outbox: its topic does not exist (the broker creates
    // no topics on its own), so the relay cannot publish it.
    let stuck = phase2_events::events::Envelope::new(
        "CheckerTest",
        accepted[0],
        "checker-test",
        serde_json::json!({}),
    );
    let mut tx = system.inventory_db.begin().await.unwrap();
    let missing_topic = format!("{}.no-such-topic", system.settings.namespace);
    phase2_events::outbox::enqueue(&mut tx, &missing_topic, &stuck)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_names_problem(&system, &accepted, &initial, "outbox still holds 1 events").await;
    sqlx::query("DELETE FROM outbox WHERE event_id = $1")
        .bind(stuck.event_id.to_string())
        .execute(&system.inventory_db)
        .await
        .unwrap();
    assert_balanced(&system, &accepted, &initial).await;

    // 2. An order charged twice: a second charge at the provider, under another key.
    let total: i64 = sqlx::query_scalar("SELECT total_cents FROM orders WHERE id = $1")
        .bind(&first)
        .fetch_one(&system.orders_db)
        .await
        .unwrap();
    let response = system
        .http
        .post(format!("{}/payments", system.provider_url))
        .header(
            "idempotency-key",
            format!("checker-test-{}", stuck.event_id),
        )
        .json(&serde_json::json!({ "order_id": first, "amount_cents": total }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let (problems, _) = inspect(&system, &accepted, &initial).await;
    assert!(
        problems.contains(&format!("order {first} was charged 2 times")),
        "{problems:#?}"
    );
    system.stop().await;
}
