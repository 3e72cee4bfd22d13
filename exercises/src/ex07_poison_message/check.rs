//! The checker of exercise 7: a real topic with three poison messages among good
//! ones, a consumer loop that restarts on `Err` as a real one would, and phase 2's
//! own dead-letter tooling reading what the learner's code wrote.

use super::{Apply, Envelope, HandleError, Incoming, PoisonRouter, Publish, Routed};
use crate::infra::{self, Kafka};
use crate::{Failure, ensure};
use common::domain::{OrderId, OrderStatus};
use futures::future::BoxFuture;
use phase2_events::flow::{Line, OrderPlaced};
use rdkafka::producer::FutureProducer;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// How often the same message may fail before the partition counts as blocked.
const RESTARTS: usize = 3;

/// An order service: needs a readable `OrderPlaced` payload; records what it applied.
/// The event in `flaky` fails once, transiently (its database blinked).
#[derive(Debug, Default)]
struct Orders {
    applied: Mutex<Vec<String>>,
    flaky: Mutex<Option<String>>,
}

impl Apply for Orders {
    fn apply<'a>(&'a self, event: &'a Envelope) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let _placed: OrderPlaced = event.decode()?;
            let id = event.event_id.to_string();
            {
                let mut flaky = self.flaky.lock().unwrap();
                if flaky.as_deref() == Some(id.as_str()) {
                    *flaky = None;
                    return Err(HandleError::Transient(anyhow::anyhow!(
                        "injected fault: the order database did not answer in time"
                    )));
                }
            }
            self.applied.lock().unwrap().push(id);
            Ok(())
        })
    }
}

/// A real producer whose first publish fails (the broker was unreachable a moment).
struct Producer {
    producer: FutureProducer,
    fail_first: AtomicBool,
}

impl Publish for Producer {
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        key: Option<&'a str>,
        payload: Option<&'a [u8]>,
        headers: &'a [(&'a str, String)],
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            if self.fail_first.swap(false, Ordering::SeqCst) {
                anyhow::bail!("injected fault: the broker did not acknowledge the dead letter");
            }
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            infra::publish(&self.producer, topic, key, payload, &headers).await
        })
    }
}

fn placed(order: OrderId) -> Envelope {
    let payload = OrderPlaced {
        status: OrderStatus::Placed,
        customer_id: "c-7".into(),
        total_cents: 1_250,
        items: vec![Line {
            sku: "pizza-margherita".into(),
            qty: 1,
        }],
    };
    Envelope::new(
        "OrderPlaced",
        order,
        "exercise-7",
        serde_json::to_value(payload).expect("serializable"),
    )
}

/// One poison message: its position on the topic, and what its reason must contain.
struct Poison {
    position: usize,
    payload: Option<Vec<u8>>,
    reason_contains: String,
    what: &'static str,
}

pub fn check<R: PoisonRouter>() -> Result<(), Failure> {
    infra::block_on(scenario::<R>())
}

async fn scenario<R: PoisonRouter>() -> Result<(), Failure> {
    let kafka = Kafka::create("exercise7", &["orders", "orders.dlq"]).await?;
    let (topic, dlq) = (kafka.name("orders"), kafka.name("orders.dlq"));
    let order = OrderId::new();
    let key = order.to_string();
    let good: Vec<Envelope> = (0..4).map(|_| placed(order)).collect();
    let truncated = br#"{"event_id": "0197", "event_type": "OrderPl"#.to_vec();
    let mut wrong_payload = placed(order);
    wrong_payload.payload = serde_json::json!({"customer_id": "c-7"});
    let wrong_payload_bytes = serde_json::to_vec(&wrong_payload).expect("serializable");
    let poison = [
        Poison {
            position: 1,
            reason_contains: serde_json::from_slice::<Envelope>(&truncated)
                .expect_err("truncated JSON")
                .to_string(),
            payload: Some(truncated),
            what: "truncated JSON",
        },
        Poison {
            position: 3,
            reason_contains: match wrong_payload.decode::<OrderPlaced>() {
                Err(err) => err.to_string(),
                Ok(_) => unreachable!("the payload lacks fields"),
            },
            payload: Some(wrong_payload_bytes),
            what: "an OrderPlaced envelope whose payload lacks its fields",
        },
        Poison {
            position: 4,
            payload: None,
            reason_contains: "empty".into(),
            what: "an empty message",
        },
    ];
    // The topic: good, truncated, good, wrong payload, empty, good, good.
    let mut sequence: Vec<Option<Vec<u8>>> = good
        .iter()
        .map(|e| Some(serde_json::to_vec(e).expect("serializable")))
        .collect();
    for p in &poison {
        sequence.insert(p.position, p.payload.clone());
    }
    for payload in &sequence {
        kafka.send(&topic, &key, payload.as_deref(), &[]).await?;
    }

    // Read them back from the broker, in offset order: what a consumer receives.
    let mut messages = kafka.read_all(&topic).await?;
    messages.sort_by_key(|m| m.offset);
    ensure(messages.len() == sequence.len(), || {
        format!(
            "expected {} messages on {topic}, found {}",
            sequence.len(),
            messages.len()
        )
    })?;

    let router = R::new();
    let orders = Orders {
        flaky: Mutex::new(Some(good[2].event_id.to_string())),
        ..Orders::default()
    };
    let producer = Producer {
        producer: kafka.producer.clone(),
        fail_first: AtomicBool::new(true),
    };
    let mut routed = Vec::new();
    for (position, message) in messages.iter().enumerate() {
        let incoming = Incoming {
            topic: &topic,
            partition: message.partition,
            offset: message.offset,
            key: message.key.as_deref(),
            payload: sequence[position].as_deref(),
        };
        let mut failures = Vec::new();
        loop {
            match router.route(incoming, &orders, &producer).await {
                Ok(outcome) => {
                    routed.push(outcome);
                    break;
                }
                Err(err) => {
                    failures.push(format!("{err:#}"));
                    if failures.len() == RESTARTS {
                        let what = poison
                            .iter()
                            .find(|p| p.position == position)
                            .map_or("a good message", |p| p.what);
                        return Err(Failure(format!(
                            "the message at offset {} ({what}) failed {RESTARTS} times in a row \
                             (\"{}\"): the consumer restarts, reads it again, fails again — the \
                             partition is blocked and the {} messages behind it are never read. \
                             A message that can never succeed goes to the dead-letter topic",
                            message.offset,
                            failures[0],
                            messages.len() - position - 1
                        )));
                    }
                }
            }
        }
    }

    let letters = kafka.read_all(&dlq).await?;
    let flaky_position = poison.len() + 2; // where good[2] sits on the topic
    let flaky_dead = letters
        .iter()
        .any(|l| l.value == messages[flaky_position].value);
    ensure(!flaky_dead, || {
        format!(
            "the event at offset {} failed once *transiently* (its database did not answer in \
             time) and was dead-lettered: that is not poison — it would have worked a moment \
             later. Return Err so the consumer reads it again",
            messages[flaky_position].offset
        )
    })?;
    let applied = orders.applied.lock().unwrap().clone();
    let expected: Vec<String> = good.iter().map(|e| e.event_id.to_string()).collect();
    for p in &poison {
        ensure(routed[p.position] == Routed::DeadLettered, || {
            format!(
                "{} (offset {}) was answered {:?}, not DeadLettered: skipping it silently loses a \
                 message that was accepted",
                p.what, messages[p.position].offset, routed[p.position]
            )
        })?;
    }

    ensure(applied.contains(&good[2].event_id.to_string()), || {
        format!(
            "the event at offset {} failed once transiently, and it was never applied: it was \
             reported handled and the consumer moved past it — lost. Return Err for a transient \
             failure, so the message is read again",
            messages[flaky_position].offset
        )
    })?;
    ensure(applied == expected, || {
        format!(
            "the 4 good events must each be applied once, in order; {} applications happened",
            applied.len()
        )
    })?;
    ensure(letters.len() == poison.len(), || {
        format!(
            "{} dead letters on {dlq}, expected {} (one per poison message). The first publish \
             to the dead-letter topic failed: if that error was ignored and the message reported \
             DeadLettered anyway, it is lost — return the error, so the message is read again",
            letters.len(),
            poison.len()
        )
    })?;
    let mut letters = letters;
    letters.sort_by_key(|l| {
        l.headers
            .get("dlq_source_offset")
            .and_then(|o| o.parse::<i64>().ok())
    });
    for (p, letter) in poison.iter().zip(&letters) {
        let source = &messages[p.position];
        let header = |name: &str| letter.headers.get(name).cloned().unwrap_or_default();
        ensure(header("dlq_reason").contains(&p.reason_contains), || {
            format!(
                "the dead letter for {} has dlq_reason {:?}; it must say what was wrong — include \
                 the error itself ({:?})",
                p.what,
                header("dlq_reason"),
                p.reason_contains
            )
        })?;
        ensure(
            header("dlq_source_topic") == topic
                && header("dlq_source_partition") == source.partition.to_string()
                && header("dlq_source_offset") == source.offset.to_string(),
            || {
                format!(
                    "the dead letter for {} must say where it came from: dlq_source_topic={topic}, \
                     dlq_source_partition={}, dlq_source_offset={}; its headers are {:?}",
                    p.what, source.partition, source.offset, letter.headers
                )
            },
        )?;
        ensure(
            letter.value == source.value && letter.key == source.key,
            || {
                format!(
                    "the dead letter for {} must carry the original key and payload unchanged, so it \
                 can be replayed; got key {:?} and payload {:?}",
                    p.what, letter.key, letter.value
                )
            },
        )?;
    }

    // Phase 2's own tool must be able to re-drive them.
    let replayed = phase2_events::dlq::replay(&kafka.brokers, &dlq, &kafka.producer)
        .await
        .map_err(|err| {
            Failure(format!(
                "`phase2-events dlq replay` failed on your dead letters: {err:#}"
            ))
        })?;
    let after = kafka.read_all(&topic).await?;
    let back = after
        .iter()
        .filter(|m| m.headers.contains_key("replayed_from_dlq"))
        .count();
    ensure(replayed == poison.len() && back == poison.len(), || {
        format!(
            "phase 2's `dlq replay` re-drove {replayed} of your {} dead letters ({back} arrived back \
             on {topic})",
            poison.len()
        )
    })
}
