//! The checker of exercise 6: real outbox rows in PostgreSQL, a real topic, and a
//! publisher that can crash at the worst moments.

use super::{OutboxRelay, Publish};
use crate::infra::{self, Database, Kafka};
use crate::{Failure, ensure};
use common::domain::OrderId;
use futures::future::BoxFuture;
use phase2_events::events::Envelope;
use phase2_events::outbox;
use rdkafka::producer::FutureProducer;
use sqlx::{Any, AnyPool, Row, Transaction};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Where the publisher fails, counting its calls from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// The broker acknowledges call n, then the relay process dies.
    CrashAfterAck(usize),
    /// The relay process dies during call n, before the broker got anything.
    CrashBeforeSend(usize),
    /// Call n fails (broker unreachable); later calls work.
    FailOnce(usize),
}

/// A real Kafka producer with a fault plan. "Dies" means: signal the checker and
/// never return, so the checker can abort the relay's task right there.
struct Broker {
    producer: FutureProducer,
    fault: Fault,
    calls: AtomicUsize,
    died: tokio::sync::Notify,
    /// An older transaction to commit during the first publish (see `stragglers`).
    straggler: tokio::sync::Mutex<Option<Transaction<'static, Any>>>,
}

impl Broker {
    fn new(kafka: &Kafka, fault: Fault) -> Arc<Broker> {
        Arc::new(Broker {
            producer: kafka.producer.clone(),
            fault,
            calls: AtomicUsize::new(0),
            died: tokio::sync::Notify::new(),
            straggler: tokio::sync::Mutex::new(None),
        })
    }

    async fn die(&self) -> anyhow::Result<()> {
        self.died.notify_one();
        std::future::pending().await
    }
}

impl Publish for Broker {
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        key: &'a str,
        payload: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(tx) = self.straggler.lock().await.take() {
                tx.commit().await?;
            }
            match self.fault {
                Fault::CrashBeforeSend(n) if n == call => return self.die().await,
                Fault::FailOnce(n) if n == call => {
                    anyhow::bail!("injected fault: broker unreachable (call {call})")
                }
                _ => {}
            }
            infra::publish(
                &self.producer,
                topic,
                Some(key),
                Some(payload.as_bytes()),
                &[],
            )
            .await?;
            if self.fault == Fault::CrashAfterAck(call) {
                return self.die().await;
            }
            Ok(())
        })
    }
}

pub fn check<R: OutboxRelay>() -> Result<(), Failure> {
    infra::block_on(async {
        let db = Database::create(Vec::new()).await?;
        let result = scenarios::<R>(&db.pool).await;
        db.close().await;
        result
    })
}

async fn scenarios<R: OutboxRelay>(pool: &AnyPool) -> Result<(), Failure> {
    let kafka = Kafka::create(
        "exercise6",
        &[
            "healthy",
            "crash-after",
            "crash-before",
            "straggler",
            "failure",
        ],
    )
    .await?;
    healthy::<R>(pool, &kafka).await?;
    crash::<R>(pool, &kafka, "crash-after", Fault::CrashAfterAck(2)).await?;
    crash::<R>(pool, &kafka, "crash-before", Fault::CrashBeforeSend(2)).await?;
    stragglers::<R>(pool, &kafka).await?;
    a_failed_publish::<R>(pool, &kafka).await
}

/// Adds `OrderPlaced`-like events to the outbox, one transaction each.
async fn enqueue(
    pool: &AnyPool,
    topic: &str,
    orders: &[OrderId],
) -> Result<Vec<Envelope>, Failure> {
    let mut events = Vec::new();
    for order in orders {
        let event = Envelope::new("OrderPlaced", *order, "exercise-6", serde_json::json!({}));
        let mut tx = pool.begin().await.map_err(db)?;
        outbox::enqueue(&mut tx, topic, &event)
            .await
            .map_err(|e| Failure(format!("{e:#}")))?;
        tx.commit().await.map_err(db)?;
        events.push(event);
    }
    Ok(events)
}

fn db(err: sqlx::Error) -> Failure {
    Failure(format!("database: {err}"))
}

/// Runs batches of 3 until one publishes nothing; errors are tolerated (a relay's
/// run loop logs them and tries again).
async fn drain<R: OutboxRelay>(relay: &R, broker: &Broker) -> Result<(), Failure> {
    let mut last_error = None;
    for _ in 0..40 {
        match relay.relay_batch(broker, 3).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(err) => last_error = Some(format!("{err:#}")),
        }
    }
    Err(Failure(match last_error {
        Some(err) => {
            format!("40 batches later relay_batch has not finished; its last error: {err}")
        }
        None => {
            "40 batches later relay_batch still publishes something: does it ever mark rows?".into()
        }
    }))
}

/// What reached the topic: event ids in offset order per partition.
async fn on_topic(kafka: &Kafka, topic: &str) -> Result<Vec<String>, Failure> {
    let mut messages = kafka.read_all(topic).await?;
    messages.sort_by_key(|m| (m.partition, m.offset));
    messages
        .iter()
        .map(|m| {
            serde_json::from_str::<Envelope>(&m.value)
                .map(|e| e.event_id.to_string())
                .map_err(|err| {
                    Failure(format!(
                        "a message on {topic} is not the outbox's envelope: {err}"
                    ))
                })
        })
        .collect()
}

async fn unpublished(pool: &AnyPool, events: &[Envelope]) -> Result<usize, Failure> {
    let mut n = 0;
    for event in events {
        let row = sqlx::query("SELECT published_at FROM outbox WHERE event_id = $1")
            .bind(event.event_id.to_string())
            .fetch_one(pool)
            .await
            .map_err(db)?;
        n += usize::from(
            row.try_get::<Option<String>, _>("published_at")
                .map_err(db)?
                .is_none(),
        );
    }
    Ok(n)
}

/// None lost, at most `max_copies` of each, one order's events in outbox order, and
/// nothing left unmarked.
async fn verify(
    pool: &AnyPool,
    kafka: &Kafka,
    topic: &str,
    events: &[Envelope],
    max_copies: usize,
    situation: &str,
) -> Result<(), Failure> {
    let seen = on_topic(kafka, &kafka.name(topic)).await?;
    let index: BTreeMap<String, usize> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.event_id.to_string(), i + 1))
        .collect();
    let lost: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| !seen.contains(&e.event_id.to_string()))
        .map(|(i, _)| i + 1)
        .collect();
    ensure(lost.is_empty(), || {
        format!(
            "{situation}: events {lost:?} of {} never reached the topic (it holds {:?}, by outbox \
             position) — and the outbox no longer offers them: they are lost. A row may be marked \
             only after the broker acknowledged it",
            events.len(),
            seen.iter()
                .map(|id| index.get(id).copied().unwrap_or(0))
                .collect::<Vec<_>>()
        )
    })?;
    let copies = events
        .iter()
        .map(|e| {
            seen.iter()
                .filter(|s| **s == e.event_id.to_string())
                .count()
        })
        .max()
        .unwrap_or(0);
    ensure(copies <= max_copies, || {
        format!(
            "{situation}: one event reached the topic {copies} times; at most {max_copies} expected"
        )
    })?;
    // Per order, the first arrival of each event must follow the outbox order.
    let mut first_seen: Vec<usize> = Vec::new();
    let mut done = HashSet::new();
    for id in &seen {
        if done.insert(id.clone()) {
            first_seen.extend(index.get(id));
        }
    }
    for order in events.iter().map(|e| e.order_id).collect::<HashSet<_>>() {
        let positions: Vec<usize> = first_seen
            .iter()
            .copied()
            .filter(|i| events[i - 1].order_id == order)
            .collect();
        ensure(positions.windows(2).all(|w| w[0] < w[1]), || {
            format!(
                "{situation}: one order's events reached the topic in the order {positions:?} (outbox \
                 positions); consumers would see them out of order. Publish in id order, and stop \
                 at the first failure instead of skipping the row"
            )
        })?;
    }
    let left = unpublished(pool, events).await?;
    ensure(left == 0, || {
        format!("{situation}: {left} outbox rows are still unpublished after the relay finished")
    })
}

async fn healthy<R: OutboxRelay>(pool: &AnyPool, kafka: &Kafka) -> Result<(), Failure> {
    let (a, b, c) = (OrderId::new(), OrderId::new(), OrderId::new());
    let events = enqueue(pool, &kafka.name("healthy"), &[a, b, c, a, b, c, a]).await?;
    drain(&R::new(pool.clone()), &Broker::new(kafka, Fault::None)).await?;
    verify(pool, kafka, "healthy", &events, 1, "with a healthy broker").await
}

async fn crash<R: OutboxRelay>(
    pool: &AnyPool,
    kafka: &Kafka,
    topic: &str,
    fault: Fault,
) -> Result<(), Failure> {
    let order = OrderId::new();
    let events = enqueue(pool, &kafka.name(topic), &[order, order, order, order]).await?;
    let broker = Broker::new(kafka, fault);
    let relay = Arc::new(R::new(pool.clone()));
    let running = {
        let (relay, broker) = (relay.clone(), broker.clone());
        tokio::spawn(async move { relay.relay_batch(&*broker, 10).await })
    };
    let died = tokio::time::timeout(Duration::from_secs(30), broker.died.notified()).await;
    running.abort();
    let finished = running.await;
    ensure(died.is_ok(), || {
        format!(
            "the relay never made a second publish call in its batch of 4 rows (it finished with \
             {:?})",
            finished.map(|r| r.map_err(|e| e.to_string()))
        )
    })?;
    // The process restarts: a new relay, a healthy broker.
    drain(&R::new(pool.clone()), &Broker::new(kafka, Fault::None)).await?;
    let situation = match fault {
        Fault::CrashAfterAck(_) => {
            "the relay died after the broker acknowledged the 2nd of 4 rows, before marking it, and restarted"
        }
        _ => {
            "the relay died while sending the 2nd of 4 rows (the broker never got it), and restarted"
        }
    };
    verify(pool, kafka, topic, &events, 2, situation).await
}

async fn stragglers<R: OutboxRelay>(pool: &AnyPool, kafka: &Kafka) -> Result<(), Failure> {
    let topic = kafka.name("straggler");
    let order = OrderId::new();
    // Row n-1 is committed. An older transaction takes id n; a newer one takes n+1
    // and commits first. The older one commits while the relay publishes n+1 — so row
    // n becomes visible *inside* the range of the batch it was not part of.
    let first = enqueue(pool, &topic, &[OrderId::new()]).await?;
    let older = Envelope::new("OrderPlaced", order, "exercise-6", serde_json::json!({}));
    let mut older_tx = pool.begin().await.map_err(db)?;
    outbox::enqueue(&mut older_tx, &topic, &older)
        .await
        .map_err(|e| Failure(format!("{e:#}")))?;
    let newer = enqueue(pool, &topic, &[OrderId::new()]).await?;
    let broker = Broker::new(kafka, Fault::None);
    *broker.straggler.lock().await = Some(older_tx);
    drain(&R::new(pool.clone()), &broker).await?;
    verify(
        pool,
        kafka,
        "straggler",
        &[first[0].clone(), older, newer[0].clone()],
        1,
        "rows n-1 and n+1 were committed; row n, of an older transaction, committed while the \
         relay was publishing them",
    )
    .await
}

async fn a_failed_publish<R: OutboxRelay>(pool: &AnyPool, kafka: &Kafka) -> Result<(), Failure> {
    let order = OrderId::new();
    let events = enqueue(pool, &kafka.name("failure"), &[order; 5]).await?;
    drain(
        &R::new(pool.clone()),
        &Broker::new(kafka, Fault::FailOnce(2)),
    )
    .await?;
    verify(
        pool,
        kafka,
        "failure",
        &events,
        2,
        "the 2nd publish call failed once (broker unreachable), the relay kept going",
    )
    .await
}
