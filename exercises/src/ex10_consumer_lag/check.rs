//! The checker of exercise 10: a real topic whose partitions hold known numbers of
//! messages (one of them with its oldest messages deleted, as retention does), a
//! group whose committed offsets the checker sets, and phase 2's own lag probe as the
//! second opinion.

use super::LagMeter;
use crate::infra::{self, Kafka};
use crate::{Failure, ensure};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub fn check<M: LagMeter>() -> Result<(), Failure> {
    infra::block_on(scenario::<M>())
}

async fn publish(kafka: &Kafka, topic: &str, partition: i32, n: usize) -> Result<(), Failure> {
    for i in 0..n {
        let payload = format!("message {i}");
        kafka
            .producer
            .send(
                FutureRecord::<str, str>::to(topic)
                    .partition(partition)
                    .key("k")
                    .payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(err, _)| Failure(format!("publishing to {topic}: {err}")))?;
    }
    Ok(())
}

/// Deletes the messages of `partition` below `before`, as retention does with old
/// segments (Kafka's DeleteRecords): the partition's low watermark becomes `before`.
async fn delete_before(
    kafka: &Kafka,
    topic: &str,
    partition: i32,
    before: i64,
) -> Result<(), Failure> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .create()
        .map_err(|err| Failure(format!("creating an admin client: {err}")))?;
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(topic, partition, Offset::Offset(before))
        .map_err(|err| Failure(format!("{err}")))?;
    let deleted = admin
        .delete_records(&offsets, &AdminOptions::new())
        .await
        .map_err(|err| Failure(format!("deleting records of {topic}/{partition}: {err}")))?;
    for element in deleted.elements() {
        if let Err(err) = element.error() {
            return Err(Failure(format!(
                "deleting records of {topic}/{partition}: {err}"
            )));
        }
    }
    Ok(())
}

/// Commits offsets for `group` the way a consumer does after finishing messages.
fn commit(brokers: &str, group: &str, topic: &str, offsets: &[(i32, i64)]) -> Result<(), Failure> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|err| Failure(format!("creating a committer: {err}")))?;
    let mut list = TopicPartitionList::new();
    for (partition, offset) in offsets {
        list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .map_err(|err| Failure(format!("{err}")))?;
    }
    consumer
        .commit(&list, CommitMode::Sync)
        .map_err(|err| Failure(format!("committing offsets for {group}: {err}")))
}

async fn measure<M: LagMeter>(
    meter: &Arc<M>,
    kafka: &Kafka,
    group: &str,
    topic: &str,
) -> Result<(BTreeMap<i32, i64>, BTreeMap<i32, i64>), Failure> {
    let (meter, brokers, group, topic) = (
        meter.clone(),
        kafka.brokers.clone(),
        group.to_owned(),
        topic.to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        let yours = meter
            .lag(&brokers, &group, &topic)
            .map_err(|err| Failure(format!("lag() failed: {err:#}")))?;
        let probe = phase2_events::kafka::LagProbe::new(&brokers, &group, vec![topic])
            .and_then(|probe| probe.sample(Duration::from_secs(10)))
            .map_err(|err| Failure(format!("phase 2's lag probe failed: {err:#}")))?;
        let reference = probe.iter().map(|p| (p.partition, p.lag())).collect();
        Ok((yours, reference))
    })
    .await
    .map_err(|err| Failure(format!("lag() panicked: {err}")))?
}

async fn scenario<M: LagMeter>() -> Result<(), Failure> {
    let kafka = Kafka::create("exercise10", &["orders"]).await?;
    let topic = kafka.name("orders");
    let group = kafka.name(phase2_events::flow::Service::Notification.group());
    let meter = Arc::new(M::new());

    // Partition 0: 10 published, the group finished 0..=3 (committed 4).
    // Partition 1: 5 published, the oldest 2 deleted (low watermark 2), the group
    // never committed here: it will start at 2.
    // Partition 2: nothing published.
    publish(&kafka, &topic, 0, 10).await?;
    publish(&kafka, &topic, 1, 5).await?;
    delete_before(&kafka, &topic, 1, 2).await?;
    let (brokers, g, t) = (kafka.brokers.clone(), group.clone(), topic.clone());
    tokio::task::spawn_blocking(move || commit(&brokers, &g, &t, &[(0, 4)]))
        .await
        .map_err(|err| Failure(format!("{err}")))??;
    let (yours, reference) = measure(&meter, &kafka, &group, &topic).await?;
    let expected = BTreeMap::from([(0, 6), (1, 3), (2, 0)]);
    ensure(reference == expected, || {
        format!("the broker disagrees with the checker's setup: phase 2's probe says {reference:?}")
    })?;
    ensure(yours == expected, || {
        format!(
            "partition 0 holds offsets 0–9 and the group committed 4 (it finished 0–3, and 4 is the \
             next it will read); partition 1 was given offsets 0–4, of which 0 and 1 were deleted \
             (its low watermark is 2, as after retention), and the group never committed there, so \
             it will start at the low watermark, not at 0; partition 2 is empty. Lag must be \
             {expected:?}, your lag() says {yours:?}"
        )
    })?;

    // The group catches up on 1; partition 2 gets 3 messages and one is finished.
    publish(&kafka, &topic, 2, 3).await?;
    let (brokers, g, t) = (kafka.brokers.clone(), group.clone(), topic.clone());
    tokio::task::spawn_blocking(move || commit(&brokers, &g, &t, &[(1, 5), (2, 1)]))
        .await
        .map_err(|err| Failure(format!("{err}")))??;
    let (yours, reference) = measure(&meter, &kafka, &group, &topic).await?;
    let expected = BTreeMap::from([(0, 6), (1, 0), (2, 2)]);
    ensure(yours == expected && reference == expected, || {
        format!(
            "after the group committed 5 on partition 1 (all of it) and 1 on partition 2 (of 3), \
             lag must be {expected:?}; your lag() says {yours:?} (phase 2's probe: {reference:?})"
        )
    })?;

    // Measuring must not have changed the group: measure again, same answer.
    let (again, _) = measure(&meter, &kafka, &group, &topic).await?;
    ensure(again == expected, || {
        format!(
            "measured twice with nothing published or consumed in between, lag went from \
             {expected:?} to {again:?}: measuring changed the group (did it subscribe and commit?)"
        )
    })
}
