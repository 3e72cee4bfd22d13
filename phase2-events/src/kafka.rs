//! Kafka client settings, in one place, with the reason for each.
//!
//! The services speak only the Kafka protocol through rdkafka, so the same code runs
//! against the local `tansu` broker (`cargo xtask up`) and Apache Kafka (the compose
//! file).

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// Where the broker is (`KAFKA_BROKERS`, default `127.0.0.1:9092`).
pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// A producer that never writes a message twice or out of order per partition, and
/// only reports success once every in-sync replica has it.
pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Idempotence: the broker drops a retried batch it already has (sequence
        // numbers per partition), so librdkafka's own retries cannot duplicate.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Small batches, short wait: latency over throughput for a workshop.
        .set("linger.ms", "5")
        // Keep trying through a broker restart instead of failing the delivery.
        .set("message.timeout.ms", "60000")
        .create()
        .with_context(|| format!("creating a Kafka producer for {brokers}"))
}

/// Creates `topics` with `partitions` each; topics that already exist are fine.
pub async fn ensure_topics(brokers: &str, topics: &[&str], partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .with_context(|| format!("creating a Kafka admin client for {brokers}"))?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .with_context(|| {
            format!("cannot reach the Kafka broker at {brokers}; start it with `cargo xtask up`")
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// One partition as a consumer group sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset: the next message it will read. `None`: the
    /// group never committed here (it starts from `earliest`).
    pub committed: Option<i64>,
    /// The first offset still on the broker.
    pub low_watermark: i64,
    /// The offset the next message published will get.
    pub high_watermark: i64,
}

impl PartitionLag {
    /// Messages published but not yet finished by the group.
    pub fn lag(&self) -> i64 {
        let done = self.committed.unwrap_or(self.low_watermark);
        (self.high_watermark - done).max(0)
    }
}

/// Measures a consumer group's lag from outside the group: committed offsets (what
/// the group finished) against high watermarks (what was published). A probe never
/// joins the group, so measuring does not cause a rebalance.
///
/// A probe is cheap for the broker, which matters when the broker is the bottleneck:
/// the partition list is fetched once, and [`sample_all`] asks for the watermarks of
/// every partition of every probe in two `ListOffsets` requests (latest, earliest)
/// rather than two per partition.
pub struct LagProbe {
    group: String,
    topics: Vec<String>,
    consumer: rdkafka::consumer::BaseConsumer,
    partitions: std::sync::OnceLock<Vec<(String, i32)>>,
}

impl std::fmt::Debug for LagProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagProbe")
            .field("group", &self.group)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl LagProbe {
    pub fn new(brokers: &str, group: &str, topics: Vec<String>) -> anyhow::Result<LagProbe> {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .with_context(|| format!("creating a lag probe for group {group}"))?;
        Ok(LagProbe {
            group: group.to_owned(),
            topics,
            consumer,
            partitions: std::sync::OnceLock::new(),
        })
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// The partitions of the group's topics (asked once: partitions are created with
    /// the topic and never change here).
    fn partitions(&self, timeout: Duration) -> anyhow::Result<&[(String, i32)]> {
        use rdkafka::consumer::Consumer;
        if let Some(partitions) = self.partitions.get() {
            return Ok(partitions);
        }
        let mut partitions = Vec::new();
        for topic in &self.topics {
            let metadata = self.consumer.fetch_metadata(Some(topic), timeout)?;
            for t in metadata.topics() {
                for p in t.partitions() {
                    partitions.push((t.name().to_owned(), p.id()));
                }
            }
        }
        Ok(self.partitions.get_or_init(|| partitions))
    }

    /// Every partition of the group's topics. Blocking (librdkafka round trips):
    /// call it from `spawn_blocking`.
    pub fn sample(&self, timeout: Duration) -> anyhow::Result<Vec<PartitionLag>> {
        Ok(sample_all(std::slice::from_ref(self), timeout)?
            .pop()
            .unwrap_or_default())
    }
}

/// [`LagProbe::sample`] of each probe, with the watermarks of all their partitions
/// fetched together. Blocking.
pub fn sample_all(
    probes: &[LagProbe],
    timeout: Duration,
) -> anyhow::Result<Vec<Vec<PartitionLag>>> {
    use rdkafka::consumer::Consumer;
    use std::collections::BTreeSet;
    let Some(first) = probes.first() else {
        return Ok(Vec::new());
    };
    let mut every = BTreeSet::new();
    for probe in probes {
        every.extend(probe.partitions(timeout)?.iter().cloned());
    }
    // ListOffsets with the special timestamps -1 (latest) and -2 (earliest).
    let watermarks =
        |which: rdkafka::Offset| -> anyhow::Result<std::collections::HashMap<(String, i32), i64>> {
            let mut wanted = rdkafka::TopicPartitionList::new();
            for (topic, partition) in &every {
                wanted.add_partition_offset(topic, *partition, which)?;
            }
            let answer = first.consumer.offsets_for_times(wanted, timeout)?;
            Ok(answer
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    rdkafka::Offset::Offset(offset) => {
                        Some(((e.topic().to_owned(), e.partition()), offset))
                    }
                    _ => None,
                })
                .collect())
        };
    let high = watermarks(rdkafka::Offset::End)?;
    let low = watermarks(rdkafka::Offset::Beginning)?;
    let mut samples = Vec::with_capacity(probes.len());
    for probe in probes {
        let mut wanted = rdkafka::TopicPartitionList::new();
        for (topic, partition) in probe.partitions(timeout)? {
            wanted.add_partition(topic, *partition);
        }
        let committed = probe.consumer.committed_offsets(wanted, timeout)?;
        let mut partitions = Vec::new();
        for element in committed.elements() {
            let key = (element.topic().to_owned(), element.partition());
            partitions.push(PartitionLag {
                topic: key.0.clone(),
                partition: key.1,
                committed: match element.offset() {
                    rdkafka::Offset::Offset(offset) => Some(offset),
                    _ => None,
                },
                low_watermark: low.get(&key).copied().unwrap_or(0),
                high_watermark: high.get(&key).copied().unwrap_or(0),
            });
        }
        samples.push(partitions);
    }
    Ok(samples)
}
