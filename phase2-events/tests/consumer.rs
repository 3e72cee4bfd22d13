//! The at-least-once, idempotent consumer against real PostgreSQL and a real
//! Apache Kafka (`cargo xtask up`).

use common::domain::OrderId;
use common::shutdown::CancellationToken;
use phase2_events::consumer::{
    EventConsumer, HandleError, Handler, Transactional, dlq_topic, retry_topic,
};
use phase2_events::events::Envelope;

use phase2_events::testing::Setup;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureRecord;
use serde_json::json;
use sqlx::{Any, Row, Transaction};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Records each event's effect; fails transiently once for events marked `flaky`,
/// and permanently for events marked `impossible`.
#[derive(Default)]
struct RecordingHandler {
    /// Which consumer instance this is (recorded with each effect).
    instance: String,
    failed_once: Mutex<Vec<String>>,
    /// While set, events marked `needs_fix` fail permanently (a bug not fixed yet).
    bug_present: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// How often events marked `always_fails` were tried (they fail transiently).
    attempts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Set while an event marked `slow_retry` is in its (slow) second attempt.
    slow_in_progress: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Handler for RecordingHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &Envelope,
    ) -> Result<(), HandleError> {
        {
            if event.payload["impossible"] == true {
                return Err(HandleError::Permanent(
                    "this event can never be applied".into(),
                ));
            }
            if event.payload["needs_fix"] == true
                && self.bug_present.load(std::sync::atomic::Ordering::SeqCst)
            {
                return Err(HandleError::Permanent(
                    "bug: cannot handle needs_fix yet".into(),
                ));
            }
            if event.payload["always_fails"] == true {
                self.attempts
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                return Err(HandleError::Transient(anyhow::anyhow!("provider down")));
            }
            let mut instance = self.instance.clone();
            if event.payload["slow_retry"] == true {
                let first_try = {
                    let mut failed = self.failed_once.lock().unwrap();
                    let first = !failed.contains(&event.event_id.to_string());
                    if first {
                        failed.push(event.event_id.to_string());
                    }
                    first
                };
                if first_try {
                    return Err(HandleError::Transient(anyhow::anyhow!("simulated timeout")));
                }
                self.slow_in_progress.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1500)).await;
                self.slow_in_progress.store(false, Ordering::SeqCst);
            }
            if event.payload["probe"] == true && self.slow_in_progress.load(Ordering::SeqCst) {
                instance = "overlapped".into();
            }
            if event.payload["flaky"] == true {
                let mut failed = self.failed_once.lock().unwrap();
                if !failed.contains(&event.event_id.to_string()) {
                    failed.push(event.event_id.to_string());
                    return Err(HandleError::Transient(anyhow::anyhow!("simulated timeout")));
                }
            }
            sqlx::query("INSERT INTO effects (event_id, order_id, instance) VALUES ($1, $2, $3)")
                .bind(event.event_id.to_string())
                .bind(event.order_id.to_string())
                .bind(&instance)
                .execute(&mut **tx)
                .await?;
            Ok(())
        }
    }
}

/// The harness's [`Setup`] (a database and a topic with its retry and dead-letter
/// topics) with an `effects` table that the recording handler writes to.
struct Fixture(Setup);

impl std::ops::Deref for Fixture {
    type Target = Setup;
    fn deref(&self) -> &Setup {
        &self.0
    }
}

async fn setup() -> Fixture {
    let setup = phase2_events::testing::setup("test-consumer", &[retry_topic, dlq_topic]).await;
    sqlx::query("CREATE TABLE effects (event_id TEXT PRIMARY KEY, order_id TEXT NOT NULL, instance TEXT NOT NULL)")
        .execute(&setup.pool)
        .await
        .unwrap();
    Fixture(setup)
}

impl Fixture {
    async fn send(&self, key: &str, payload: &[u8]) {
        self.producer
            .send(
                FutureRecord::to(&self.topic).key(key).payload(payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    async fn send_event(&self, event: &Envelope) {
        self.send(
            &event.order_id.to_string(),
            &serde_json::to_vec(event).unwrap(),
        )
        .await;
    }

    fn start_consumer(
        &self,
        stop: &CancellationToken,
    ) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let group = format!("test-group-{}", uuid::Uuid::now_v7().simple());
        self.start_instance(&group, "a", stop)
    }

    /// One instance of consumer group `group`.
    fn start_instance(
        &self,
        group: &str,
        instance: &str,
        stop: &CancellationToken,
    ) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let handler = RecordingHandler {
            instance: instance.to_owned(),
            ..Default::default()
        };
        self.start_with(group, handler, stop)
    }

    fn start_with(
        &self,
        group: &str,
        handler: RecordingHandler,
        stop: &CancellationToken,
    ) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let consumer = EventConsumer {
            name: group.to_owned(),
            brokers: self.brokers.clone(),
            instance: None,
            when_unreachable: phase2_events::config::WhenUnreachable::Pause,
            topics: vec![self.topic.clone()],
            producer: self.producer.clone(),
            effect: Transactional {
                pool: self.pool.clone(),
                handler,
            },
        };
        tokio::spawn(consumer.run(stop.clone()))
    }

    async fn count_by(&self, instance: &str) -> i64 {
        sqlx::query("SELECT COUNT(*) AS n FROM effects WHERE instance = $1")
            .bind(instance)
            .fetch_one(&self.pool)
            .await
            .unwrap()
            .get("n")
    }

    async fn effects(&self) -> BTreeMap<String, String> {
        sqlx::query("SELECT event_id, order_id FROM effects")
            .fetch_all(&self.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("event_id"), r.get("order_id")))
            .collect()
    }

    async fn wait_for_effects(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.effects().await.len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} effects applied",
                self.effects().await.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new consumer group reading `topic` from its beginning.
    fn reader(&self, topic: &str) -> StreamConsumer {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set(
                "group.id",
                format!("reader-{}", uuid::Uuid::now_v7().simple()),
            )
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        consumer
    }

    /// Everything on the dead-letter topic: (headers, payload).
    async fn dead_letters(&self, expected: usize) -> Vec<(BTreeMap<String, String>, Vec<u8>)> {
        let consumer = self.reader(&dlq_topic(&self.topic));
        let mut letters = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while letters.len() < expected && tokio::time::Instant::now() < deadline {
            if let Ok(Ok(m)) =
                tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
            {
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                letters.push((headers, m.payload().unwrap_or_default().to_vec()));
            }
        }
        letters
    }

    async fn teardown(
        self,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        stop.cancel();
        task.await.unwrap().unwrap();
        self.0.close().await;
    }
}

fn event(order: OrderId, payload: serde_json::Value) -> Envelope {
    Envelope::new("TestEvent", order, "corr", payload)
}

/// Scenario 5: a poison message among good ones goes to the dead-letter topic with
/// the reason and its origin; the good ones around it are all applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_and_the_good_ones_are_applied() {
    let setup = setup().await;
    let order = OrderId::new();
    for i in 0..5 {
        setup.send_event(&event(order, json!({ "i": i }))).await;
    }
    setup.send(&order.to_string(), b"{not json").await;
    setup
        .send_event(&event(order, json!({ "impossible": true })))
        .await;
    for i in 5..10 {
        setup.send_event(&event(order, json!({ "i": i }))).await;
    }
    let stop = CancellationToken::new();
    let task = setup.start_consumer(&stop);

    setup.wait_for_effects(10).await;
    let letters = setup.dead_letters(2).await;
    assert_eq!(letters.len(), 2, "both poison messages are in the DLQ");
    let (unreadable, _) = letters
        .iter()
        .find(|(_, p)| p == b"{not json")
        .expect("the unreadable one");
    assert!(
        unreadable["dlq_reason"].starts_with("unreadable envelope"),
        "{unreadable:?}"
    );
    assert_eq!(unreadable["dlq_source_topic"], setup.topic);
    assert!(unreadable["dlq_source_offset"].parse::<i64>().is_ok());
    assert!(unreadable["dlq_source_partition"].parse::<i32>().is_ok());
    assert!(
        letters
            .iter()
            .any(|(h, _)| h["dlq_reason"].contains("can never be applied"))
    );
    assert_eq!(setup.effects().await.len(), 10);
    setup.teardown(stop, task).await;
}

/// Events waiting when the consumer starts are applied in batches — several events
/// per database transaction (rows written by one transaction share its id, `xmin`) —
/// and one event that fails inside a batch does not fail the others: the batch is
/// applied again one event at a time, and only the failing one is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_events_are_applied_in_batches_and_a_failing_one_fails_alone() {
    let setup = setup().await;
    let impossible = event(OrderId::new(), json!({ "impossible": true }));
    for i in 0..40 {
        setup
            .send_event(&event(OrderId::new(), json!({ "i": i })))
            .await;
        if i == 20 {
            setup.send_event(&impossible).await;
        }
    }
    let stop = CancellationToken::new();
    let task = setup.start_consumer(&stop);
    setup.wait_for_effects(40).await;
    let letters = setup.dead_letters(1).await;
    assert_eq!(
        letters.len(),
        1,
        "only the impossible event is dead-lettered"
    );
    assert!(letters[0].0["dlq_reason"].contains("can never be applied"));
    let transactions: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT xmin::text)::BIGINT FROM processed_events")
            .fetch_one(&setup.pool)
            .await
            .unwrap();
    let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*)::BIGINT FROM processed_events")
        .fetch_one(&setup.pool)
        .await
        .unwrap();
    assert_eq!(
        recorded, 40,
        "every good event recorded once, the failing one not at all"
    );
    assert!(
        transactions < 40 / 2,
        "40 waiting events took {transactions} transactions: not batched"
    );
    setup.teardown(stop, task).await;
}

/// Scenario 2: every event delivered twice; every effect applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_delivered_twice_is_applied_once() {
    let setup = setup().await;
    let events: Vec<Envelope> = (0..20)
        .map(|i| event(OrderId::new(), json!({ "i": i })))
        .collect();
    for e in &events {
        setup.send_event(e).await;
        setup.send_event(e).await; // a duplicating producer
    }
    let stop = CancellationToken::new();
    let task = setup.start_consumer(&stop);
    setup.wait_for_effects(20).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // let the duplicates arrive too
    let effects = setup.effects().await;
    assert_eq!(effects.len(), 20);
    for e in &events {
        assert_eq!(effects[&e.event_id.to_string()], e.order_id.to_string());
    }
    let processed: i64 = sqlx::query("SELECT COUNT(*) AS n FROM processed_events")
        .fetch_one(&setup.pool)
        .await
        .unwrap()
        .get("n");
    assert_eq!(processed, 20, "one record per event, not per delivery");
    setup.teardown(stop, task).await;
}

/// A transient failure goes through the retry topic and succeeds later; nothing is
/// dead-lettered and nothing is applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_through_the_retry_topic() {
    let setup = setup().await;
    let flaky = event(OrderId::new(), json!({ "flaky": true }));
    setup.send_event(&flaky).await;
    setup
        .send_event(&event(OrderId::new(), json!({ "i": 1 })))
        .await;
    let stop = CancellationToken::new();
    let task = setup.start_consumer(&stop);
    setup.wait_for_effects(2).await;
    assert!(
        setup
            .effects()
            .await
            .contains_key(&flaky.event_id.to_string())
    );
    setup.teardown(stop, task).await;
}

/// The retry topic has a consumer group of its own: while a failing event waits
/// out its 8 s retry delay, new events on the main topic are applied at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_waiting_for_its_retry_does_not_hold_up_the_main_topic() {
    let setup = setup().await;
    let handler = RecordingHandler {
        instance: "a".into(),
        ..Default::default()
    };
    let attempts = handler.attempts.clone();
    let stop = CancellationToken::new();
    let task = setup.start_with(
        &format!("test-group-{}", uuid::Uuid::now_v7().simple()),
        handler,
        &stop,
    );
    let failing = event(OrderId::new(), json!({ "always_fails": true }));
    setup.send_event(&failing).await;
    // Tried, then retried after 0.5 s and 2 s: the next retry waits 8 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while attempts.load(Ordering::SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never retried twice"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the retry consumer pick up the third retry and start waiting for it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let good = event(OrderId::new(), json!({ "i": 1 }));
    setup.send_event(&good).await;
    setup.wait_for_effects(1).await;
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "the new event was applied while the failing one still waited for its last retry"
    );
    // The failing event ends in the dead-letter topic after its last retry.
    let letters = setup.dead_letters(1).await;
    assert_eq!(letters.len(), 1);
    assert!(letters[0].0["dlq_reason"].contains("provider down"));
    assert_eq!(attempts.load(Ordering::SeqCst), 4, "1 try + 3 retries");
    setup.teardown(stop, task).await;
}

/// The main and the retry consumer run at once, but never on the same order: an
/// order's event from the main topic waits while another of its events, from the
/// retry topic, is still being handled (a retried charge and a cancellation must not
/// decide on the same state at the same time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_events_of_one_order_are_never_handled_at_the_same_time() {
    let setup = setup().await;
    let handler = RecordingHandler {
        instance: "a".into(),
        ..Default::default()
    };
    let slow = handler.slow_in_progress.clone();
    let stop = CancellationToken::new();
    let task = setup.start_with(
        &format!("test-group-{}", uuid::Uuid::now_v7().simple()),
        handler,
        &stop,
    );
    let order = OrderId::new();
    let retried = event(order, json!({ "slow_retry": true }));
    setup.send_event(&retried).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !slow.load(Ordering::SeqCst) {
        assert!(tokio::time::Instant::now() < deadline, "never retried");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The retry is in the middle of its work: the same order's next event arrives.
    setup
        .send_event(&event(order, json!({ "probe": true })))
        .await;
    setup.wait_for_effects(2).await;
    assert_eq!(
        setup.count_by("overlapped").await,
        0,
        "the second event ran while the first was still being handled"
    );
    setup.teardown(stop, task).await;
}

/// Scenario 6: a second instance joins the group during traffic. The partitions are
/// rebalanced between the two (offsets committed on revoke); no event is lost and none
/// is applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_joining_during_traffic_loses_nothing_and_applies_nothing_twice() {
    let setup = setup().await;
    let group = format!("test-group-{}", uuid::Uuid::now_v7().simple());
    let stop = CancellationToken::new();
    let first = setup.start_instance(&group, "a", &stop);
    let total = 300;
    let orders: Vec<OrderId> = (0..30).map(|_| OrderId::new()).collect();
    for i in 0..total {
        setup
            .send_event(&event(orders[i % orders.len()], json!({ "i": i })))
            .await;
        if i == total / 3 {
            // Let the first instance get going, then a second one joins mid-stream.
            setup.wait_for_effects(50).await;
        }
    }
    let second = setup.start_instance(&group, "b", &stop);
    // Keep traffic flowing until the rebalance has handed partitions to "b" (a new
    // member can take seconds to join), then a little longer.
    let mut sent = total;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while setup.count_by("b").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second instance never got a partition"
        );
        for _ in 0..10 {
            setup
                .send_event(&event(orders[sent % orders.len()], json!({ "i": sent })))
                .await;
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..100 {
        setup
            .send_event(&event(orders[sent % orders.len()], json!({ "i": sent })))
            .await;
        sent += 1;
    }
    setup.wait_for_effects(sent).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let effects = setup.effects().await;
    assert_eq!(effects.len(), sent, "every event applied exactly once");
    let by_instance: BTreeMap<String, i64> =
        sqlx::query("SELECT instance, COUNT(*) AS n FROM effects GROUP BY instance")
            .fetch_all(&setup.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("instance"), r.get("n")))
            .collect();
    assert!(
        by_instance.get("a").copied().unwrap_or(0) > 0
            && by_instance.get("b").copied().unwrap_or(0) > 0,
        "both instances processed part of the stream: {by_instance:?}"
    );
    stop.cancel();
    first.await.unwrap().unwrap();
    setup.teardown(stop, second).await;
}

/// `phase2-events dlq list | replay`: a dead letter is inspected, the bug is fixed, and
/// the letter is re-driven to its topic and applied. Replaying again replays nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_listed_then_replayed_once_after_the_fix() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let setup = setup().await;
    let bug = std::sync::Arc::new(AtomicBool::new(true));
    let handler = RecordingHandler {
        instance: "a".into(),
        bug_present: bug.clone(),
        ..Default::default()
    };
    let stop = CancellationToken::new();
    let task = setup.start_with(
        &format!("test-group-{}", uuid::Uuid::now_v7().simple()),
        handler,
        &stop,
    );
    let stuck = event(OrderId::new(), json!({ "needs_fix": true }));
    setup.send_event(&stuck).await;
    setup
        .send_event(&event(OrderId::new(), json!({ "i": 1 })))
        .await;
    setup.wait_for_effects(1).await;

    let dlq = dlq_topic(&setup.topic);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let letters = loop {
        let letters = phase2_events::dlq::list(&setup.brokers, &dlq).unwrap();
        if !letters.is_empty() || tokio::time::Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].headers["dlq_reason"],
        "bug: cannot handle needs_fix yet"
    );
    let letter: Envelope = serde_json::from_str(&letters[0].value).unwrap();
    assert_eq!(
        letter.event_id, stuck.event_id,
        "the original message, unchanged"
    );
    assert_eq!(letters[0].headers["dlq_source_topic"], setup.topic);

    bug.store(false, Ordering::SeqCst); // the fix is deployed
    let replayed = phase2_events::dlq::replay(&setup.brokers, &dlq, &setup.producer)
        .await
        .unwrap();
    assert_eq!(replayed, 1);
    setup.wait_for_effects(2).await;
    assert!(
        setup
            .effects()
            .await
            .contains_key(&stuck.event_id.to_string())
    );
    let again = phase2_events::dlq::replay(&setup.brokers, &dlq, &setup.producer)
        .await
        .unwrap();
    assert_eq!(again, 0, "a dead letter is replayed once");
    setup.teardown(stop, task).await;
}

/// Events on the retry topic so far (read from the beginning by a new group).
async fn retried(setup: &Fixture) -> usize {
    let consumer = setup.reader(&retry_topic(&setup.topic));
    let mut n = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await {
        n += 1;
    }
    n
}

/// Phase 4: a consumer whose database goes away pauses its partitions and probes the
/// database, instead of sending every event to the retry topic (and, three failures
/// later, to the dead-letter topic); when the database answers again it resumes and
/// applies everything, nothing lost, nothing retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_pauses_while_its_database_is_unreachable_and_floods_nothing() {
    let setup = setup().await;
    let postgres: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = phase2_events::fault_proxy::FaultProxy::start(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        postgres,
    )
    .await
    .unwrap();
    let through_proxy = setup
        .db
        .url
        .replace("127.0.0.1:5432", &proxy.addr().to_string());
    assert_ne!(
        through_proxy, setup.db.url,
        "the consumer's database goes through the proxy"
    );
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(1))
        .connect(&through_proxy)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let consumer = EventConsumer {
        name: format!("test-group-{}", uuid::Uuid::now_v7().simple()),
        brokers: setup.brokers.clone(),
        instance: None,
        when_unreachable: phase2_events::config::WhenUnreachable::Pause,
        topics: vec![setup.topic.clone()],
        producer: setup.producer.clone(),
        effect: Transactional {
            pool,
            handler: RecordingHandler {
                instance: "a".into(),
                ..Default::default()
            },
        },
    };
    let task = tokio::spawn(consumer.run(stop.clone()));
    for i in 0..5 {
        setup
            .send_event(&event(OrderId::new(), json!({ "i": i })))
            .await;
    }
    setup.wait_for_effects(5).await;

    // The database goes away; ten more events arrive.
    proxy.faults().set_down(true);
    for i in 5..15 {
        setup
            .send_event(&event(OrderId::new(), json!({ "i": i })))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        setup.effects().await.len(),
        5,
        "nothing can be applied meanwhile"
    );
    assert!(!task.is_finished(), "the consumer waits; it does not fail");

    // It comes back: everything applied, nothing went through the retry topic.
    proxy.faults().set_down(false);
    setup.wait_for_effects(15).await;
    assert_eq!(
        retried(&setup).await,
        0,
        "no event was sent to the retry topic"
    );
    assert!(setup.dead_letters(0).await.is_empty());
    stop.cancel();
    task.await.unwrap().unwrap();
    proxy.stop().await;
    setup.0.close().await;
}
