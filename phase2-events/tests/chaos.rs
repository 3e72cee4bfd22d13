//! The chaos scenarios of phase 2, each on a whole system and each ending with the
//! reconciliation checker (`phase2_events::testing::checker`, in `src/testing/checker.rs`). Scenario 7 (relay crash between
//! publish and mark) is in `relay.rs`, where the topic itself is inspected.

use common::domain::OrderId;
use common::local_kafka::LocalCluster;
use common::payment::LatencyRange;
use phase2_events::flow::Service;
use phase2_events::services::payment::PaymentService;
use phase2_events::testing::checker::check;
use phase2_events::testing::{Options, TestSystem};
use rdkafka::producer::FutureRecord;
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(90);

const MENU: [&str; 4] = ["pizza-margherita", "burger-classic", "fries", "cola"];

/// Payments the provider has answered (a `pending` row is one still to be made).
const SETTLED: &str = "SELECT COUNT(*) FROM payments WHERE status <> 'pending'";

async fn place_many(system: &TestSystem, n: usize) -> Vec<OrderId> {
    let placing = (0..n).map(|i| async move { system.place(&[(MENU[i % MENU.len()], 1)]).await });
    futures::future::join_all(placing).await
}

async fn count(db: &sqlx::AnyPool, sql: &'static str) -> i64 {
    sqlx::query(sql)
        .fetch_one(db)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

/// 1. A consumer process is SIGKILLed mid-processing and restarted: the events it
///    had not committed are redelivered, and nobody is charged twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_1_a_consumer_killed_mid_processing_resumes_without_loss() {
    // On the shared broker `cargo xtask up` started: the fault is the consumer's.
    let system = TestSystem::start(Options {
        services: &[
            Service::Order,
            Service::Inventory,
            Service::Notification,
            Service::Delivery,
        ],
        provider_latency: LatencyRange {
            min: Duration::from_millis(50),
            max: Duration::from_millis(150),
        },
        ..Options::default()
    })
    .await;
    let initial = system.stock().await;
    let spawn_payment = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_phase2-events"))
            .arg("payment")
            .envs(system.env())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning the payment service")
    };
    let mut payment = spawn_payment();
    let accepted = place_many(&system, 40).await;

    // Wait until it is in the middle of the work, then kill -9.
    let started = Instant::now();
    while count(&system.payments_db(), SETTLED).await < 5 {
        assert!(
            started.elapsed() < LIMIT,
            "the payment process never started paying"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    payment.start_kill().unwrap();
    payment.wait().await.unwrap();
    let done_before = count(&system.payments_db(), SETTLED).await;
    eprintln!("payment service killed with {done_before} of 40 payments done");
    assert!(done_before < 40, "killed mid-processing");

    let restarted = Instant::now();
    let mut payment = spawn_payment();
    // The killed member still holds its partitions until the group coordinator gives
    // up on it: the consumers' session timeout (6 s, `consumer.rs`). Only then does
    // the new process get them.
    let report = check(&system, &accepted, &initial, LIMIT).await;
    eprintln!(
        "all 40 delivered {:.1} s after the new payment process started",
        restarted.elapsed().as_secs_f64()
    );
    assert_eq!(report.delivered, 40);
    assert_eq!(report.charges, 40, "one charge per order, none twice");
    payment.start_kill().unwrap();
    system.stop().await;
}

/// 2. Every event is delivered twice (the relays publish each row twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_2_every_event_delivered_twice_is_applied_once() {
    let system = TestSystem::start(Options {
        decline_rate: 0.2,
        ..Options::default()
    })
    .await;
    system.duplicate_every_event();
    let initial = system.stock().await;
    let accepted = place_many(&system, 20).await;
    let report = check(&system, &accepted, &initial, LIMIT).await;
    assert_eq!(report.delivered + report.cancelled_payment, 20);

    // The fault really doubled the traffic: each event is on the topic twice.
    let on_topic =
        phase2_events::dlq::list(&system.settings.brokers, &system.topics.orders).unwrap();
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for message in &on_topic {
        *copies
            .entry(message.headers["event_id"].clone())
            .or_default() += 1;
    }
    assert!(!copies.is_empty());
    assert!(
        copies.values().all(|n| *n == 2),
        "every orders event twice on the topic"
    );
    // Notifications are best effort and trail the orders: wait for them, then
    // require exactly one per event (the checker already refuses any twice).
    let started = Instant::now();
    let mut sent = phase2_events::testing::checker::notifications(&system).await;
    while sent.len() < copies.len() && started.elapsed() < LIMIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sent = phase2_events::testing::checker::notifications(&system).await;
    }
    let distinct: BTreeSet<&String> = sent.iter().collect();
    eprintln!(
        "{} orders events, each published twice, each applied once; {} notifications",
        copies.len(),
        sent.len()
    );
    assert_eq!(sent.len(), copies.len(), "one notification per event");
    assert_eq!(distinct.len(), sent.len(), "no notification twice");
    assert!(
        copies.keys().all(|id| distinct.contains(id)),
        "a notification for every event"
    );
    system.stop().await;
}

/// 3. The broker is killed (SIGKILL) and restarted mid-flow. Orders keep being
///    accepted meanwhile: they wait in the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_3_a_broker_restart_mid_flow_loses_nothing() {
    // A broker of its own: killing the shared one would hit every other test.
    let mut broker = LocalCluster::start(1).expect("a Kafka node of this test's own");
    let system = TestSystem::start(Options {
        brokers: Some(broker.brokers()),
        ..Options::default()
    })
    .await;
    let initial = system.stock().await;
    let mut accepted = place_many(&system, 15).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.kill(1);
    eprintln!("broker killed");
    accepted.extend(place_many(&system, 15).await);
    let waiting = phase2_events::outbox::backlog(&system.orders_db)
        .await
        .unwrap();
    eprintln!(
        "15 orders accepted while the broker was down; {waiting} events wait in the order outbox"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Blocking (a JVM starting): off the runtime's other workers, which keep the
    // system running meanwhile.
    tokio::task::block_in_place(|| broker.start_node(1))
        .expect("the broker starts again on its storage");
    eprintln!("broker restarted");
    let report = check(&system, &accepted, &initial, LIMIT).await;
    assert_eq!(report.delivered, 30);
    system.stop().await;
}

/// 4. Latency (and a short partition) between the services and the broker, through
///    the TCP fault proxy of `phase2_events::fault_proxy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_4_latency_between_services_and_broker() {
    let broker_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = phase2_events::fault_proxy::FaultProxy::start(
        "127.0.0.1:0".parse().unwrap(),
        ([127, 0, 0, 1], broker_port).into(),
    )
    .await
    .unwrap();
    // A broker of its own that advertises the proxy, so every connection a client
    // makes (not just the bootstrap one) goes through it.
    let _broker = LocalCluster::start_behind(broker_port, proxy.addr())
        .expect("a Kafka node of this test's own");
    let system = TestSystem::start(Options {
        brokers: Some(proxy.addr().to_string()),
        ..Options::default()
    })
    .await;
    let initial = system.stock().await;
    proxy.faults().set_latency(Duration::from_millis(100));
    let started = Instant::now();
    let mut accepted = place_many(&system, 15).await;
    // A 2 s partition in the middle of it.
    proxy.faults().set_down(true);
    accepted.extend(place_many(&system, 5).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.faults().set_down(false);
    let report = check(&system, &accepted, &initial, LIMIT).await;
    assert_eq!(report.delivered, 20);
    eprintln!(
        "20 orders delivered through 100 ms broker latency and a 2 s partition in {:.1} s; \
         the proxy forwarded {} bytes over {} connections",
        started.elapsed().as_secs_f64(),
        proxy.bytes_forwarded(),
        proxy.connections_accepted()
    );
    assert!(proxy.bytes_forwarded() > 0);
    system.stop().await;
    proxy.stop().await;
}

/// 5. Poison messages among good ones: each lands on the dead-letter topic with its
///    reason and source coordinates; the good orders are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_5_poison_messages_go_to_the_dead_letter_topic() {
    let system = TestSystem::start(Options::default()).await;
    let initial = system.stock().await;
    let producer = phase2_events::kafka::producer(&system.settings.brokers).unwrap();
    let mut accepted = place_many(&system, 5).await;
    // Not JSON at all, and a well-formed envelope whose payload is nonsense.
    let garbage_key = OrderId::new().to_string();
    producer
        .send(
            FutureRecord::to(&system.topics.orders)
                .key(&garbage_key)
                .payload("\u{1f4a3} not an event"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let bad = phase2_events::events::Envelope::new(
        "OrderPlaced",
        OrderId::new(),
        "poison",
        serde_json::json!({"surprise": true}),
    );
    producer
        .send(
            FutureRecord::to(&system.topics.orders)
                .key(&bad.order_id.to_string())
                .payload(&serde_json::to_string(&bad).unwrap()),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    accepted.extend(place_many(&system, 5).await);
    let report = check(&system, &accepted, &initial, LIMIT).await;
    assert_eq!(report.delivered, 10, "the good orders went through");

    // Every consumer of `orders` dead-lettered the garbage; payment and inventory
    // (which read OrderPlaced's payload) dead-lettered the bad payload.
    let dlq = phase2_events::consumer::dlq_topic(&system.topics.orders);
    let expected: BTreeSet<(String, String)> = [
        (Service::Payment, &garbage_key),
        (Service::Inventory, &garbage_key),
        (Service::Delivery, &garbage_key),
        (Service::Notification, &garbage_key),
        (Service::Payment, &bad.order_id.to_string()),
        (Service::Inventory, &bad.order_id.to_string()),
        (Service::Notification, &bad.order_id.to_string()),
    ]
    .into_iter()
    .map(|(group, key)| (system.topics.group(group), key.clone()))
    .collect();
    let started = Instant::now();
    loop {
        let letters = phase2_events::dlq::list(&system.settings.brokers, &dlq).unwrap();
        let found: BTreeSet<(String, String)> = letters
            .iter()
            .map(|l| {
                (
                    l.headers["dlq_consumer"].clone(),
                    l.key.clone().unwrap_or_default(),
                )
            })
            .collect();
        if found == expected {
            for letter in &letters {
                assert!(!letter.headers["dlq_reason"].is_empty());
                assert_eq!(letter.headers["dlq_source_topic"], system.topics.orders);
                assert!(letter.headers.contains_key("dlq_source_partition"));
                assert!(letter.headers.contains_key("dlq_source_offset"));
            }
            eprintln!(
                "{} dead letters, e.g. reason: {}",
                letters.len(),
                letters[0].headers["dlq_reason"]
            );
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "dead letters {found:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    system.stop().await;
}

/// 6. A second payment instance joins during traffic: the group rebalances, the
///    first commits on revoke, nothing is lost or charged twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_6_a_second_instance_joins_during_traffic() {
    let system = TestSystem::start(Options {
        provider_latency: LatencyRange {
            min: Duration::from_millis(20),
            max: Duration::from_millis(60),
        },
        ..Options::default()
    })
    .await;
    let initial = system.stock().await;
    let mut accepted = place_many(&system, 20).await;
    let second = PaymentService::build(&system.settings).await.unwrap();
    let stop = common::shutdown::CancellationToken::new();
    let second = tokio::spawn(second.run(stop.clone()));
    accepted.extend(place_many(&system, 20).await);
    let report = check(&system, &accepted, &initial, LIMIT).await;
    assert_eq!(report.delivered, 40);
    assert_eq!(report.charges, 40);
    stop.cancel();
    second.await.unwrap().unwrap();
    system.stop().await;
}
