//! Kafka client settings, in one place, with the reason for each; creating and
//! deleting topics.
//!
//! The services speak only the Kafka protocol through rdkafka, so the same code runs
//! against the Apache Kafka that `cargo xtask up` runs natively (one node, or three
//! with `--brokers 3`) and the one in the compose file. The consumers' settings are
//! in [`crate::consumer`] (`EventConsumer::kafka_consumer`).

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// Where the broker is (`KAFKA_BROKERS`, default `127.0.0.1:9092`).
pub fn brokers() -> String {
    common::endpoints::KAFKA.url()
}

/// How long a client waits, at most, before it dials a broker that went away again.
/// librdkafka backs off exponentially from 100 ms to 10 s: after an outage of ten
/// seconds a client may find the broker back only ten seconds later — recovery time
/// nobody asked for. Capped at 1 s, a returning broker is found within a second, and
/// a few hundred clients dialling once a second are nothing to it.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The configuration every client of the services starts from: the brokers, and
/// [`RECONNECT_BACKOFF_MAX`].
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers).set(
        "reconnect.backoff.max.ms",
        RECONNECT_BACKOFF_MAX.as_millis().to_string(),
    );
    config
}

/// A producer that never writes a message twice or out of order per partition, and
/// only reports success once every in-sync replica has it.
pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    producer_giving_up_after(brokers, Duration::from_secs(60))
}

/// [`producer`], but a message not acknowledged within `timeout` fails (librdkafka's
/// `message.timeout.ms`).
pub fn producer_giving_up_after(
    brokers: &str,
    timeout: Duration,
) -> anyhow::Result<FutureProducer> {
    client_config(brokers)
        // Idempotence: the broker drops a retried batch it already has (sequence
        // numbers per partition), so librdkafka's own retries cannot duplicate.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // How long a message may wait for others to share its batch (one request, one
        // append, one replication round for all of them). librdkafka's default is 5 ms;
        // 0 sends each message in a request of its own, which under load costs the
        // broker more requests than the latency it saves. 5 ms is small next to an
        // order's journey (hundreds of ms) and lets a busy relay's sends travel together.
        .set("linger.ms", "5")
        // 60 s (`producer`): keep trying through a broker restart instead of failing
        // the delivery.
        .set("message.timeout.ms", timeout.as_millis().to_string())
        .create()
        .with_context(|| format!("creating a Kafka producer for {brokers}"))
}

/// Publishes `envelope` to `topic` (keyed by its order, its trace context in the
/// headers) and waits for the acknowledgement.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    envelope: &crate::events::Envelope,
) -> anyhow::Result<()> {
    use rdkafka::message::{Header, OwnedHeaders};
    let mut headers = OwnedHeaders::new();
    for (name, value) in envelope.headers() {
        headers = headers.insert(Header {
            key: name,
            value: Some(&value),
        });
    }
    let key = envelope.order_id.to_string();
    let payload = serde_json::to_string(envelope)?;
    let record = rdkafka::producer::FutureRecord::to(topic)
        .key(&key)
        .payload(&payload)
        .headers(headers);
    producer
        .send(record, rdkafka::util::Timeout::Never)
        .await
        .map_err(|(err, _)| {
            anyhow::anyhow!("publishing {} to {topic}: {err}", envelope.event_type)
        })?;
    Ok(())
}

fn admin(brokers: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    client_config(brokers)
        .create()
        .with_context(|| format!("creating a Kafka admin client for {brokers}"))
}

/// The broker's `default.replication.factor`: 1 on a single node, 3 on the cluster of
/// `cargo xtask up --brokers 3` (whose `min.insync.replicas=2` then lets one node go
/// without losing an acknowledged write).
const BROKER_DEFAULT: TopicReplication<'static> = TopicReplication::Fixed(-1);

/// Fails at once, with the one line naming Kafka, the address and `cargo xtask up`,
/// when nothing listens at any of `brokers` — rather than after librdkafka's own
/// timeouts (a minute for an admin request), in its own words. What every service
/// and tool that needs the broker calls before anything else.
pub async fn check_reachable(brokers: &str) -> anyhow::Result<()> {
    common::unreachable::check(&common::endpoints::KAFKA, brokers).await?;
    Ok(())
}

/// How long creating topics may wait for the broker (librdkafka's default request
/// timeout is a minute): a broker that accepts connections but does not answer
/// within this is reported as unreachable. Generous for a busy broker: the quick
/// look in [`check_reachable`] has already caught the usual case, nothing listening.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Creates `topics` with `partitions` each and the broker's default replication
/// factor; topics that already exist are fine.
pub async fn ensure_topics(brokers: &str, topics: &[&str], partitions: i32) -> anyhow::Result<()> {
    check_reachable(brokers).await?;
    let admin = admin(brokers)?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|name| NewTopic::new(name, partitions, BROKER_DEFAULT))
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(ADMIN_TIMEOUT))
        .request_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|err| {
            let kafka = &common::endpoints::KAFKA;
            kafka.unreachable(kafka.address(brokers)).because(err)
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Deletes `topics`; topics that do not exist (any more) are fine.
pub async fn delete_topics(brokers: &str, topics: &[&str]) -> anyhow::Result<()> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin = admin(brokers)?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .delete_topics(topics, &options)
        .await
        .with_context(|| format!("deleting topics on {brokers}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => anyhow::bail!("deleting topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// The names of every topic on the broker. Blocking: call it from `spawn_blocking`.
pub fn topic_names(brokers: &str) -> anyhow::Result<Vec<String>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = client_config(brokers)
        .create()
        .with_context(|| format!("creating a Kafka client for {brokers}"))?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .with_context(|| format!("listing the topics on {brokers}"))?;
    Ok(metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .collect())
}

/// Deletes every topic of a namespace: `<namespace>.…` (the topics of a test's or a
/// benchmark's system, with their retry and dead-letter topics).
pub async fn delete_namespace(brokers: &str, namespace: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !namespace.is_empty(),
        "refusing to delete the topics of the empty namespace (that is every topic)"
    );
    let owned = brokers.to_owned();
    let names = tokio::task::spawn_blocking(move || topic_names(&owned)).await??;
    let prefix = format!("{namespace}.");
    let mine: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|name| name.starts_with(&prefix))
        .collect();
    delete_topics(brokers, &mine).await
}

/// When a test made the topic `name`, if its name says so: tests name their topics
/// (or their namespace) with a UUIDv7, whose first 48 bits are the milliseconds since
/// 1970 at which it was made.
pub fn test_topic_created_at(name: &str) -> Option<std::time::SystemTime> {
    let bytes = name.as_bytes();
    (0..bytes.len().saturating_sub(31)).find_map(|start| {
        let token = name.get(start..start + 32)?;
        if !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let id = uuid::Uuid::try_parse(token).ok()?;
        if id.get_version_num() != 7 {
            return None;
        }
        let (secs, nanos) = id.get_timestamp()?.to_unix();
        Some(std::time::UNIX_EPOCH + Duration::new(secs, nanos))
    })
}

/// Deletes the topics that tests made more than `older_than` ago and never deleted
/// (a test that panicked before its clean-up). Returns how many.
pub async fn sweep_test_topics(brokers: &str, older_than: Duration) -> anyhow::Result<usize> {
    let owned = brokers.to_owned();
    let names = tokio::task::spawn_blocking(move || topic_names(&owned)).await??;
    let now = std::time::SystemTime::now();
    let stale: Vec<&str> = names
        .iter()
        .filter(|name| {
            test_topic_created_at(name)
                .and_then(|at| now.duration_since(at).ok())
                .is_some_and(|age| age > older_than)
        })
        .map(String::as_str)
        .collect();
    delete_topics(brokers, &stale).await?;
    Ok(stale.len())
}

/// Messages appended to `topics` from `from_ms` to `to_ms` (their timestamps, in
/// milliseconds since 1970), counted by offsets: `ListOffsets` by time gives each
/// partition's first offset at or after a moment. Blocking (librdkafka round trips).
pub fn messages_between(
    brokers: &str,
    topics: &[String],
    from_ms: i64,
    to_ms: i64,
    timeout: Duration,
) -> anyhow::Result<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = client_config(brokers)
        .create()
        .context("creating a consumer to count messages")?;
    let mut partitions = Vec::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for t in metadata.topics() {
            partitions.extend(t.partitions().iter().map(|p| (t.name().to_owned(), p.id())));
        }
    }
    // `End`: the latest offset, what a moment after the last message maps to.
    let offsets =
        |at: rdkafka::Offset| -> anyhow::Result<std::collections::HashMap<(String, i32), i64>> {
            let mut wanted = rdkafka::TopicPartitionList::new();
            for (topic, partition) in &partitions {
                wanted.add_partition_offset(topic, *partition, at)?;
            }
            let answer = consumer.offsets_for_times(wanted, timeout)?;
            Ok(answer
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    rdkafka::Offset::Offset(n) => Some(((e.topic().to_owned(), e.partition()), n)),
                    _ => None,
                })
                .collect())
        };
    let latest = offsets(rdkafka::Offset::End)?;
    let (from, to) = (
        offsets(rdkafka::Offset::Offset(from_ms))?,
        offsets(rdkafka::Offset::Offset(to_ms))?,
    );
    Ok(partitions
        .iter()
        .map(|key| {
            let end = latest.get(key).copied().unwrap_or(0);
            let at = |m: &std::collections::HashMap<(String, i32), i64>| {
                m.get(key).copied().unwrap_or(end)
            };
            (at(&to) - at(&from)).max(0)
        })
        .sum())
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
        let consumer = client_config(brokers)
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
pub fn sample_all<P: std::borrow::Borrow<LagProbe>>(
    probes: &[P],
    timeout: Duration,
) -> anyhow::Result<Vec<Vec<PartitionLag>>> {
    use rdkafka::consumer::Consumer;
    use std::collections::BTreeSet;
    let Some(first) = probes.first().map(P::borrow) else {
        return Ok(Vec::new());
    };
    let mut every = BTreeSet::new();
    for probe in probes.iter().map(P::borrow) {
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
    for probe in probes.iter().map(P::borrow) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_topic_is_dated_by_the_uuidv7_in_its_name() {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let made = test_topic_created_at(&format!("t{id}.orders.retry")).unwrap();
        let age = std::time::SystemTime::now().duration_since(made).unwrap();
        assert!(age < Duration::from_secs(60), "{age:?}");
        assert!(test_topic_created_at(&format!("relay-{id}")).is_some());
        // The topics of a learner's system carry no date: never swept.
        assert_eq!(test_topic_created_at("orders"), None);
        assert_eq!(test_topic_created_at("orders.dlq"), None);
        // A v4 UUID has no time in it.
        let v4 = "0f8fad5bd9cb469fa16570867728950e";
        assert_eq!(test_topic_created_at(&format!("x{v4}")), None);
    }
}
