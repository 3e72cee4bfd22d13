//! The outbox relay against real PostgreSQL and a real Kafka broker
//! (`cargo xtask up` starts both).

use common::domain::OrderId;
use common::shutdown::CancellationToken;
use phase2_events::events::Envelope;
use phase2_events::relay::{FlowWindow, Relay};
use phase2_events::testing::Setup;
use phase2_events::{kafka, outbox};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Enqueues `n` events for `orders` distinct orders, one transaction each; returns
/// the event ids in the order they were enqueued.
async fn enqueue_events(setup: &Setup, n: usize, orders: usize) -> Vec<String> {
    let order_ids: Vec<OrderId> = (0..orders).map(|_| OrderId::new()).collect();
    let mut ids = Vec::new();
    for seq in 0..n {
        let event = Envelope::new(
            "TestEvent",
            order_ids[seq % orders],
            "corr",
            json!({ "seq": seq }),
        );
        let mut tx = setup.pool.begin().await.unwrap();
        outbox::enqueue(&mut tx, &setup.topic, &event)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        ids.push(event.event_id.to_string());
    }
    ids
}

/// Reads `topic` from the beginning with a new consumer group until `distinct`
/// different events arrived, then a little longer to catch duplicates.
async fn consume(setup: &Setup, distinct: usize) -> Vec<Envelope> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &setup.brokers)
        .set(
            "group.id",
            format!("test-{}", uuid::Uuid::now_v7().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&setup.topic]).unwrap();
    let mut received = Vec::new();
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut settle_until = None;
    loop {
        let now = tokio::time::Instant::now();
        if now > deadline || settle_until.is_some_and(|until| now > until) {
            break;
        }
        if let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        {
            let envelope: Envelope = serde_json::from_slice(message.payload().unwrap()).unwrap();
            assert_eq!(
                message.key().unwrap(),
                envelope.order_id.to_string().as_bytes(),
                "keyed by order id"
            );
            seen.insert(envelope.event_id);
            received.push(envelope);
            if seen.len() == distinct && settle_until.is_none() {
                settle_until = Some(tokio::time::Instant::now() + Duration::from_secs(2));
            }
        }
    }
    received
}

/// No loss: every enqueued event is on the topic, and the outbox is drained.
async fn assert_every_event_published(setup: &Setup, received: &[Envelope], ids: &[String]) {
    let distinct: BTreeSet<String> = received.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(
        distinct,
        ids.iter().cloned().collect(),
        "every committed event was published"
    );
    assert_per_order_sequence_is_increasing(received);
    assert_eq!(
        outbox::backlog(&setup.pool).await.unwrap(),
        0,
        "every row marked published"
    );
}

/// Stops the relays and removes the test database.
async fn teardown(
    setup: Setup,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
) {
    stop.cancel();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    setup.close().await;
}

fn assert_per_order_sequence_is_increasing(received: &[Envelope]) {
    let mut first_seen = BTreeSet::new();
    let mut last_seq: BTreeMap<OrderId, u64> = BTreeMap::new();
    for event in received {
        if !first_seen.insert(event.event_id) {
            continue; // a duplicate: consumers skip it by event_id
        }
        let seq = event.payload["seq"].as_u64().unwrap();
        if let Some(previous) = last_seq.insert(event.order_id, seq) {
            assert!(
                seq > previous,
                "order {} saw seq {seq} after {previous}",
                event.order_id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_every_outbox_row_in_order_per_order_and_marks_it() {
    let setup = phase2_events::testing::setup("test-relay", &[]).await;
    let ids = enqueue_events(&setup, 60, 6).await;
    let relay = Relay::new(
        setup.pool.clone(),
        &setup.db.url,
        kafka::producer(&setup.brokers).unwrap(),
    )
    .with_poll_interval(Duration::from_millis(200));
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay.run(stop.clone()));

    let received = consume(&setup, ids.len()).await;
    assert_every_event_published(&setup, &received, &ids).await;
    assert_eq!(
        received.len(),
        ids.len(),
        "and exactly once while nothing failed"
    );
    teardown(setup, stop, vec![task]).await;
}

/// Scenario 7: the relay crashes between publishing and marking. After a restart the
/// rows are published again — duplicates, which consumers absorb — and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_crash_between_publish_and_mark_duplicates_but_loses_nothing() {
    let setup = phase2_events::testing::setup("test-relay", &[]).await;
    let ids = enqueue_events(&setup, 40, 4).await;
    let producer = kafka::producer(&setup.brokers).unwrap();

    let crashing = Relay::new(setup.pool.clone(), &setup.db.url, producer.clone());
    crashing
        .faults()
        .crash_before_marking
        .store(true, Ordering::SeqCst);
    let crash = crashing.run(CancellationToken::new()).await.unwrap_err();
    assert!(crash.to_string().contains("injected fault"), "{crash}");
    assert_eq!(
        outbox::backlog(&setup.pool).await.unwrap(),
        40,
        "published, but not marked"
    );

    let restarted = Relay::new(setup.pool.clone(), &setup.db.url, producer)
        .with_poll_interval(Duration::from_millis(200));
    let stop = CancellationToken::new();
    let task = tokio::spawn(restarted.run(stop.clone()));

    let received = consume(&setup, ids.len()).await;
    assert_every_event_published(&setup, &received, &ids).await;
    assert_eq!(
        received.len(),
        2 * ids.len(),
        "every event arrived twice: at least once, not exactly once"
    );
    teardown(setup, stop, vec![task]).await;
}

/// Several relays may run for availability; only the leader publishes, so nothing is
/// sent twice and per-order order holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_at_once_publish_each_event_once() {
    let setup = phase2_events::testing::setup("test-relay", &[]).await;
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let relay = Relay::new(
            setup.pool.clone(),
            &setup.db.url,
            kafka::producer(&setup.brokers).unwrap(),
        )
        .with_poll_interval(Duration::from_millis(100));
        tasks.push(tokio::spawn(relay.run(stop.clone())));
    }
    let ids = enqueue_events(&setup, 50, 5).await;
    let received = consume(&setup, ids.len()).await;
    assert_eq!(
        received.len(),
        ids.len(),
        "no event published by both relays"
    );
    assert_per_order_sequence_is_increasing(&received);
    teardown(setup, stop, tasks).await;
}

/// The outbox's two lanes: rows that continue a flow (events with a cause) are
/// published before rows that start one, whatever their age, so a burst of new
/// orders cannot starve the orders already in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_under_way_are_published_before_new_ones() {
    let setup = phase2_events::testing::setup("test-relay", &[]).await;
    let enqueue = |event: Envelope| {
        let (pool, topic) = (setup.pool.clone(), setup.topic.clone());
        async move {
            let mut tx = pool.begin().await.unwrap();
            outbox::enqueue(&mut tx, &topic, &event).await.unwrap();
            tx.commit().await.unwrap();
            event.event_id.to_string()
        }
    };
    // An order in flight, then a burst of five new orders, then the next step of
    // the first one (its cause is the first event).
    let started = Envelope::new("OrderPlaced", OrderId::new(), "c0", json!({}));
    let first = enqueue(started.clone()).await;
    let mut new_orders = Vec::new();
    for i in 1..=5 {
        new_orders.push(
            enqueue(Envelope::new(
                "OrderPlaced",
                OrderId::new(),
                &format!("c{i}"),
                json!({}),
            ))
            .await,
        );
    }
    let continuing = enqueue(started.caused("OrderPaid", json!({}))).await;

    let relay = Relay::new(
        setup.pool.clone(),
        &setup.db.url,
        kafka::producer(&setup.brokers).unwrap(),
    )
    .with_batch_size(2);
    let published = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT event_id FROM outbox WHERE published_at IS NOT NULL",
        )
        .fetch_all(&setup.pool)
        .await
        .unwrap()
        .into_iter()
        .collect::<BTreeSet<String>>()
    };
    assert_eq!(relay.publish_batch().await.unwrap(), 2);
    assert_eq!(
        published().await,
        BTreeSet::from([continuing.clone(), first.clone()]),
        "the continuing event and the oldest new one, not the burst before it"
    );
    assert_eq!(relay.publish_batch().await.unwrap(), 2);
    assert_eq!(
        published().await,
        BTreeSet::from([
            continuing,
            first,
            new_orders[0].clone(),
            new_orders[1].clone()
        ]),
        "then the new orders, oldest first"
    );
    assert_eq!(
        outbox::backlog(&setup.pool).await.unwrap(),
        3,
        "the rest of the burst waits"
    );
    setup.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_window_lets_new_flows_in_only_as_flows_under_way_finish() {
    let setup = phase2_events::testing::setup("test-relay-window", &[]).await;
    // The flows' own state, as the orders table holds it for the order relay.
    sqlx::query("CREATE TABLE flows (order_id TEXT PRIMARY KEY, done BOOLEAN NOT NULL)")
        .execute(&setup.pool)
        .await
        .unwrap();
    let mut started = Vec::new();
    for i in 0..5 {
        let event = Envelope::new("OrderPlaced", OrderId::new(), &format!("c{i}"), json!({}));
        let mut tx = setup.pool.begin().await.unwrap();
        sqlx::query("INSERT INTO flows (order_id, done) VALUES ($1, FALSE)")
            .bind(event.order_id.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        outbox::enqueue(&mut tx, &setup.topic, &event)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        started.push(event);
    }
    let relay = Relay::new(
        setup.pool.clone(),
        &setup.db.url,
        kafka::producer(&setup.brokers).unwrap(),
    )
    .with_flow_window(FlowWindow::new(
        2,
        "SELECT count(*) FROM flows WHERE NOT done",
    ));
    assert_eq!(
        relay.publish_batch().await.unwrap(),
        2,
        "two flows fill the window"
    );
    assert_eq!(
        relay.publish_batch().await.unwrap(),
        0,
        "the other three wait"
    );

    // A flow under way continues whatever the window says.
    let mut tx = setup.pool.begin().await.unwrap();
    let paid = started[0].caused("OrderPaid", json!({}));
    outbox::enqueue(&mut tx, &setup.topic, &paid).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        relay.publish_batch().await.unwrap(),
        1,
        "the continuing event goes out"
    );

    // The first flow finishes: one more may start, the oldest waiting.
    sqlx::query("UPDATE flows SET done = TRUE WHERE order_id = $1")
        .bind(started[0].order_id.to_string())
        .execute(&setup.pool)
        .await
        .unwrap();
    assert_eq!(relay.publish_batch().await.unwrap(), 1);
    let published: BTreeSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT event_id FROM outbox WHERE published_at IS NOT NULL AND starts_flow",
    )
    .fetch_all(&setup.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(
        published,
        started[..3]
            .iter()
            .map(|e| e.event_id.to_string())
            .collect(),
        "new flows enter oldest first"
    );
    assert_eq!(
        outbox::backlog(&setup.pool).await.unwrap(),
        2,
        "two still wait, accepted"
    );
    setup.close().await;
}
