//! Exercise 10: consumer lag from offsets.
//!
//! Lag is the number of messages published to a partition that the consumer group
//! has not finished yet: the partition's **high watermark** (the offset the next
//! published message will get) minus the group's **committed offset** (the offset
//! of the next message the group will read). It is measured from *outside* the
//! group — asking the broker, not joining — so that measuring never causes a
//! rebalance and works when the consumers are stuck or dead, which is exactly when
//! you need it.

pub mod check;
pub mod solution;
pub mod starter;
crate::yours!("ex10_consumer_lag");

use std::collections::BTreeMap;

/// What the learner implements (their copy of `starter.rs`) and the reference
/// implements (`solution.rs`).
pub trait LagMeter: Send + Sync + 'static {
    fn new() -> Self
    where
        Self: Sized;

    /// The lag of consumer group `group` on every partition of `topic`, by partition
    /// number. Blocking (librdkafka round trips); must not join or change the group.
    fn lag(&self, brokers: &str, group: &str, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>>;
}

pub const HINTS: &[&str] = &[
    "`BaseConsumer::fetch_watermarks(topic, partition, timeout)` returns `(low, high)`; \
     `committed_offsets(list, timeout)` returns, per partition, what the group committed — \
     without subscribing, so no rebalance and no commit of your own.",
    "The committed offset is the *next* message the group will read, not the last one it \
     finished: a group that committed 4 has finished 0..=3, and with high watermark 10 its lag \
     is 10 − 4 = 6, not 5.",
    "A group that never committed on a partition gets `Offset::Invalid` back (raw value \
     −1001). It will start from `earliest` (the low watermark), so everything still on the \
     partition is lag: high − low. Never let −1001 into arithmetic.",
    "The finished pattern is `PartitionLag::lag` and `LagProbe` in phase2-events/src/kafka.rs \
     (phase 3 exports it as `kafka_consumer_lag`).",
];

pub const EXERCISE: crate::Exercise = crate::Exercise {
    number: 10,
    dir: "ex10_consumer_lag",
    title: "consumer lag from offsets",
    readme: include_str!("README.md"),
    hints: HINTS,
    needs: &[crate::infra::Service::Kafka],
    check_starter: check::check::<starter::Meter>,
    check_yours: check::check::<yours::Meter>,
    check_solution: check::check::<solution::Meter>,
};
