//! The reference for exercise 10. Phase 2's `LagProbe` and `PartitionLag::lag`
//! (phase2-events/src/kafka.rs) are the same, batched for every group at once.

use super::LagMeter;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Meter;

impl LagMeter for Meter {
    fn new() -> Self {
        Meter
    }

    fn lag(&self, brokers: &str, group: &str, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
        // Carries the group's name only to ask for its offsets: it never subscribes,
        // so it never joins the group (no rebalance) and never commits.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
        let mut partitions = TopicPartitionList::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                partitions.add_partition(topic, p.id());
            }
        }
        let committed = consumer.committed_offsets(partitions, TIMEOUT)?;
        let mut lag = BTreeMap::new();
        for element in committed.elements() {
            let (low, high) = consumer.fetch_watermarks(topic, element.partition(), TIMEOUT)?;
            // The committed offset is the next message to read. Never committed
            // (Offset::Invalid): the group will start at `earliest`, the low watermark.
            let next = match element.offset() {
                Offset::Offset(next) => next,
                _ => low,
            };
            lag.insert(element.partition(), (high - next).max(0));
        }
        Ok(lag)
    }
}
