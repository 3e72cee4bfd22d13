//! A Kafka cluster of three loses a node under traffic, and nothing is lost.
//!
//! What `cargo xtask up --brokers 3` runs, started here as a cluster of this test's
//! own (`common::local_kafka::LocalCluster`: same jars, same configuration, free
//! ports), so killing a node hits no other test. Topics keep 3 copies with
//! `min.insync.replicas=2`; phase 2's producer is idempotent with `acks=all`. So a
//! write is acknowledged only once two nodes have it, and with one node gone the
//! other two still form a majority: of the controllers (the cluster's metadata), of
//! every partition's replicas (new leaders are elected from the in-sync ones), and
//! of the consumer group's offsets topic (its coordinator moves).

use common::local_kafka::LocalCluster;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureRecord;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MESSAGES: u32 = 3000;
const LIMIT: Duration = Duration::from_secs(120);

/// The node that leads partition 0 of `topic`, as the cluster's metadata says.
fn leader_of_partition_0(brokers: &str, topic: &str) -> u32 {
    let client: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partition = &metadata.topics()[0].partitions()[0];
    assert_eq!(
        partition.replicas().len(),
        3,
        "three copies of each partition"
    );
    partition.leader() as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_one_node_of_three_killed_an_idempotent_producer_and_a_group_lose_nothing() {
    let mut cluster = tokio::task::block_in_place(|| LocalCluster::start(3))
        .expect("a three-node Kafka cluster of this test's own (jars from `cargo xtask up`)");
    let brokers = cluster.brokers();
    let topic = format!("cluster-{}", uuid::Uuid::now_v7().simple());
    phase2_events::kafka::ensure_topics(&brokers, &[&topic], 3)
        .await
        .unwrap();
    let victim = tokio::task::block_in_place(|| leader_of_partition_0(&brokers, &topic));

    // A consumer group (of one) reading from the start, committing as it goes.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("{topic}.group"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "2000")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let seen: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
    let seen_after_kill: Arc<Mutex<usize>> = Arc::default();
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (seen, seen_after_kill, killed) =
            (seen.clone(), seen_after_kill.clone(), killed.clone());
        tokio::spawn(async move {
            loop {
                let message = match consumer.recv().await {
                    Ok(message) => message,
                    // The lost node's connections fail until the clients move on.
                    Err(_) => continue,
                };
                let n: u32 = std::str::from_utf8(message.payload().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                let mut seen = seen.lock().unwrap();
                seen.insert(n);
                if killed.load(std::sync::atomic::Ordering::SeqCst) {
                    *seen_after_kill.lock().unwrap() += 1;
                }
                if seen.len() == MESSAGES as usize {
                    return;
                }
            }
        })
    };

    // Traffic at a steady pace (about 10 s of it); node `victim` dies a third of the
    // way through, and every send still has to be acknowledged.
    let producer = phase2_events::kafka::producer(&brokers).unwrap();
    let mut sends = Vec::new();
    for n in 0..MESSAGES {
        if n == MESSAGES / 3 {
            cluster.kill(victim);
            killed.store(true, std::sync::atomic::Ordering::SeqCst);
            eprintln!("killed node {victim} (the leader of partition 0) after {n} sends");
        }
        let (producer, topic) = (producer.clone(), topic.clone());
        sends.push(tokio::spawn(async move {
            let payload = n.to_string();
            producer
                .send(
                    FutureRecord::to(&topic)
                        .key(&format!("order-{}", n % 97))
                        .payload(&payload),
                    Duration::from_secs(60),
                )
                .await
                .map(|_| ())
                .map_err(|(err, _)| format!("message {n}: {err}"))
        }));
        tokio::time::sleep(Duration::from_micros(3_300)).await;
    }
    let mut failed = Vec::new();
    for send in sends {
        if let Err(err) = send.await.unwrap() {
            failed.push(err);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {MESSAGES} sends were not acknowledged: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );

    let started = Instant::now();
    tokio::time::timeout(LIMIT, reader)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the group read {} of {MESSAGES} messages within {LIMIT:?}",
                seen.lock().unwrap().len()
            )
        })
        .unwrap();
    let after_kill = *seen_after_kill.lock().unwrap();
    eprintln!(
        "all {MESSAGES} acknowledged and read by the group ({after_kill} of them after the \
         kill), the last {:.1} s after the last send",
        started.elapsed().as_secs_f64()
    );
    assert!(
        after_kill > 0,
        "the group went on reading after the node died"
    );

    // On the topic: exactly what was sent — the idempotent producer's retries to the
    // new leaders wrote nothing twice.
    let on_topic = tokio::task::block_in_place(|| {
        let client: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        (0..3)
            .map(|p| {
                let (low, high) = client
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .unwrap();
                high - low
            })
            .sum::<i64>()
    });
    assert_eq!(
        on_topic,
        i64::from(MESSAGES),
        "each message once on the topic"
    );

    // The node comes back on its storage and rejoins.
    tokio::task::block_in_place(|| cluster.start_node(victim)).unwrap();
    phase2_events::kafka::delete_topics(&brokers, &[&topic])
        .await
        .unwrap();
}
