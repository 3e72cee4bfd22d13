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
