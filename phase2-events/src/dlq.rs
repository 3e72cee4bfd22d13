//! Dead letters: look at them, then re-drive them once the cause is fixed.
//!
//! A dead letter is the original message (key, value, headers) plus `dlq_*` headers
//! saying why and where from (see [`consumer`](crate::consumer)). Two operations:
//!
//! * [`list`] reads a dead-letter topic from the beginning without changing anything.
//! * [`replay`] publishes each dead letter not replayed before back to its source
//!   topic (without the `dlq_*`/`retry_*` bookkeeping, with `replayed_from_dlq`), and
//!   commits its progress in the consumer group `dlq-replay`, so running it twice does
//!   not replay twice. The consumers' `processed_events` make a replay of something
//!   that was in fact applied harmless too.

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub const REPLAY_GROUP: &str = "dlq-replay";
const TIMEOUT: Duration = Duration::from_secs(10);

/// One dead letter, as `phase2-events dlq list` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: String,
    pub headers: BTreeMap<String, String>,
}

/// Every dead letter on `dlq_topic`, oldest first per partition.
pub fn list(brokers: &str, dlq_topic: &str) -> anyhow::Result<Vec<DeadLetter>> {
    let consumer = base_consumer(
        brokers,
        &format!("dlq-list-{}", uuid::Uuid::now_v7().simple()),
    )?;
    let mut letters = Vec::new();
    read_to_end(&consumer, dlq_topic, false, |m| {
        letters.push(m);
        Ok(())
    })?;
    Ok(letters)
}

/// Re-publishes the dead letters not replayed before; returns how many.
pub async fn replay(
    brokers: &str,
    dlq_topic: &str,
    producer: &FutureProducer,
) -> anyhow::Result<usize> {
    let consumer = base_consumer(brokers, REPLAY_GROUP)?;
    let mut pending = Vec::new();
    read_to_end(&consumer, dlq_topic, true, |letter| {
        pending.push(letter);
        Ok(())
    })?;
    for letter in &pending {
        let source = letter.headers.get("dlq_source_topic").with_context(|| {
            format!(
                "dead letter at offset {} has no dlq_source_topic",
                letter.offset
            )
        })?;
        let mut headers = OwnedHeaders::new();
        for (name, value) in letter
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with("dlq_") && !k.starts_with("retry_"))
        {
            headers = headers.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        headers = headers.insert(Header {
            key: "replayed_from_dlq",
            value: Some("true"),
        });
        let mut record = FutureRecord::to(source)
            .payload(&letter.value)
            .headers(headers);
        if let Some(key) = &letter.key {
            record = record.key(key);
        }
        producer
            .send(record, Duration::from_secs(60))
            .await
            .map_err(|(err, _)| anyhow::anyhow!("replaying to {source}: {err}"))?;
        // Progress is committed per letter: a crash mid-replay repeats at most one.
        let mut position = TopicPartitionList::new();
        position.add_partition_offset(
            dlq_topic,
            letter.partition,
            Offset::Offset(letter.offset + 1),
        )?;
        consumer.commit(&position, CommitMode::Sync)?;
        tracing::info!(
            topic = source,
            partition = letter.partition,
            offset = letter.offset,
            "dead letter replayed"
        );
    }
    Ok(pending.len())
}

fn base_consumer(brokers: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    crate::kafka::client_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .with_context(|| {
            format!(
                "cannot create a Kafka consumer for {brokers}; is the broker up (`cargo xtask up`)?"
            )
        })
}

/// Reads every partition of `topic` from the group's committed offset (or the
/// beginning) up to the end as it is now.
fn read_to_end(
    consumer: &BaseConsumer,
    topic: &str,
    from_committed: bool,
    mut each: impl FnMut(DeadLetter) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .with_context(|| format!("reading metadata of {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for partition in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *partition, TIMEOUT)?;
        assignment.add_partition(topic, *partition);
        if high > low {
            ends.insert(*partition, high);
        }
    }
    let committed = if from_committed {
        Some(consumer.committed_offsets(assignment.clone(), TIMEOUT)?)
    } else {
        None
    };
    let mut start = TopicPartitionList::new();
    for partition in &partitions {
        let offset = committed
            .as_ref()
            .and_then(|c| c.find_partition(topic, *partition))
            .map(|p| p.offset())
            .filter(|o| matches!(o, Offset::Offset(_)))
            .unwrap_or(Offset::Beginning);
        if let Offset::Offset(at) = offset
            && ends.get(partition).is_some_and(|end| at >= *end)
        {
            ends.remove(partition); // nothing new here
        }
        start.add_partition_offset(topic, *partition, offset)?;
    }
    consumer.assign(&start)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out reading {topic} to its end"
        );
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message?;
        let partition = message.partition();
        let offset = message.offset();
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        each(DeadLetter {
            partition,
            offset,
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            value: String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
            headers,
        })?;
        if ends.get(&partition).is_some_and(|end| offset + 1 >= *end) {
            ends.remove(&partition);
        }
    }
    Ok(())
}
