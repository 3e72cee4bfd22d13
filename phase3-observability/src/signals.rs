//! From spans to metrics: what phase 2 already says, counted and timed.
//!
//! Phase 2 describes its work with `tracing` spans whose fields say what happened —
//! one `consume` span per message (`consumer`, `topic`, `outcome`, `failure`,
//! `dlq_reason`), one `payment` span per charge (`outcome`), one `relay_batch` span
//! per outbox batch (`database`, `published`) — and logs each order transition.
//! [`SpanMetrics`] is a `tracing_subscriber` layer that watches those spans close and
//! records them into Prometheus metrics. So the services are instrumented once, and
//! the same spans become log lines (the JSON layer), traces (the OpenTelemetry layer)
//! and metrics (this one): the three never disagree about what happened.
//!
//! | span / event                     | metric                                                  |
//! |----------------------------------|---------------------------------------------------------|
//! | `consume` closes                 | `events_processed_total{consumer,topic,outcome}`, `event_processing_duration_seconds{consumer,topic}` |
//! | … with `failure` set             | `events_failed_total{consumer,topic,kind}`              |
//! | … with `dlq_reason` set          | `dlq_messages_total{consumer,topic,reason}`             |
//! | `payment` closes                 | `payment_duration_seconds{outcome}`                     |
//! | `relay_batch` closes             | `relay_published_total{database}`                       |
//! | "order placed" (after commit)    | `orders_total{status="placed"}`                         |
//! | "order moved" in a `consume` span that ends `applied` | `orders_total{status=<to>}` |
//! | "circuit breaker state change"   | `circuit_breaker_state{name}` (0 closed, 1 half-open, 2 open) |
//!
//! A transition is counted only when its transaction committed: "order moved" is
//! logged inside the saga's transaction, so it is held on the span and counted when
//! the span closes with `outcome=applied` — a rolled-back attempt (retried later)
//! would otherwise be counted twice.
//!
//! Labels are always short classes, never free text: `dlq_reason` is `empty`,
//! `unreadable_envelope`, `permanent` or `retries_exhausted`, while the full reason
//! travels in the dead letter's headers.

use crate::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::HashMap;
use std::fmt;
use std::time::Instant;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Payment latency buckets (seconds). Denser than the HTTP ones between 0.5 s and
/// 15 s, where the provider (2–5 s per attempt, retries, a 15 s deadline) puts
/// nearly every charge: p95 and p99 are interpolated inside a bucket, so a bucket
/// 2.5 s wide could not tell a 10 s p99 from a 12 s one.
pub const PAYMENT_BUCKETS: [f64; 22] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 12.5, 15.0, 20.0, 30.0,
];

/// The log messages this layer listens for: the constants the code that logs them
/// uses (phase 2's order service, `common`'s breaker), never a copy of their wording.
pub const ORDER_PLACED: &str = phase2_events::services::order::LOG_ORDER_PLACED;
pub const ORDER_MOVED: &str = phase2_events::services::order::LOG_ORDER_MOVED;
pub const BREAKER_CHANGED: &str = common::resilience::breaker::LOG_STATE_CHANGED;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerTopic {
    consumer: String,
    topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessedLabels {
    consumer: String,
    topic: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailedLabels {
    consumer: String,
    topic: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadLetterLabels {
    consumer: String,
    topic: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatabaseLabel {
    database: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn payment_histogram() -> Histogram {
    Histogram::new(PAYMENT_BUCKETS)
}

/// The layer. Cheap to clone; every clone records into the same metrics.
#[derive(Debug, Clone)]
pub struct SpanMetrics {
    orders: Family<StatusLabel, Counter>,
    payment: HistogramFamily<OutcomeLabel>,
    processed: Family<ProcessedLabels, Counter>,
    processing: HistogramFamily<ConsumerTopic>,
    failed: Family<FailedLabels, Counter>,
    dead_letters: Family<DeadLetterLabels, Counter>,
    relay_published: Family<DatabaseLabel, Counter>,
    breaker: Family<NameLabel, Gauge>,
}

impl SpanMetrics {
    /// Registers the metrics in `metrics`.
    pub fn new(metrics: &Metrics) -> SpanMetrics {
        let layer = SpanMetrics {
            orders: metrics.register(
                "orders",
                "Orders reaching each status (placed = created), counted once committed",
                Family::default(),
            ),
            payment: metrics.register(
                "payment_duration_seconds",
                "Time to charge an order, retries included, by outcome (captured, declined, unknown)",
                Family::new_with_constructor(payment_histogram),
            ),
            processed: metrics.register(
                "events_processed",
                "Messages finished by a consumer, by outcome (applied, duplicate, ignored, retried, dead_lettered)",
                Family::default(),
            ),
            processing: metrics.register(
                "event_processing_duration_seconds",
                "Time to handle one message to completion (effect committed, or handed on)",
                Family::new_with_constructor(crate::metrics::latency_histogram),
            ),
            failed: metrics.register(
                "events_failed",
                "Messages whose handler failed, by kind (transient: retried; permanent: dead-lettered)",
                Family::default(),
            ),
            dead_letters: metrics.register(
                "dlq_messages",
                "Messages sent to a dead-letter topic, by reason class",
                Family::default(),
            ),
            relay_published: metrics.register(
                "relay_published",
                "Outbox rows published to Kafka by the relay, by service database",
                Family::default(),
            ),
            breaker: metrics.register(
                "circuit_breaker_state",
                "Circuit breaker state: 0 closed, 1 half-open, 2 open",
                Family::default(),
            ),
        };
        // Known before the first transition: the payment client starts closed.
        layer
            .breaker
            .get_or_create(&NameLabel {
                name: "payment-provider".into(),
            })
            .set(0);
        layer
    }
}

/// What the layer keeps on a span it cares about.
#[derive(Debug)]
struct Timed {
    started: Instant,
    fields: Fields,
    /// Statuses logged inside this span, counted if it ends `applied`.
    moved_to: Vec<String>,
}

/// A span's or event's fields, as text.
#[derive(Debug, Default)]
struct Fields(HashMap<&'static str, String>);

impl Fields {
    fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name(), value.to_string());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%value` (Display) and the message arrive here; both print unquoted.
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

fn watched(name: &str) -> bool {
    matches!(name, "consume" | "payment" | "relay_batch")
}

impl<S> tracing_subscriber::Layer<S> for SpanMetrics
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !watched(attrs.metadata().name()) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(Timed {
            started: Instant::now(),
            fields,
            moved_to: Vec::new(),
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(timed) = extensions.get_mut::<Timed>() {
            values.record(&mut timed.fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // Every log line passes here: only the two places that log what we count
        // are worth reading the fields of.
        if !matches!(
            event.metadata().target(),
            "phase2_events::services::order" | "common::resilience::breaker"
        ) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        match fields.get("message") {
            ORDER_PLACED => {
                self.orders
                    .get_or_create(&StatusLabel {
                        status: "placed".into(),
                    })
                    .inc();
            }
            ORDER_MOVED => {
                let status = fields.get("to").to_owned();
                // Held on the enclosing `consume` span until it commits (see above).
                let consume = ctx
                    .event_scope(event)
                    .and_then(|mut scope| scope.find(|span| span.name() == "consume"));
                match consume {
                    Some(span) => {
                        if let Some(timed) = span.extensions_mut().get_mut::<Timed>() {
                            timed.moved_to.push(status);
                        }
                    }
                    None => {
                        self.orders.get_or_create(&StatusLabel { status }).inc();
                    }
                }
            }
            BREAKER_CHANGED => {
                let state = match fields.get("to") {
                    "closed" => 0,
                    "half_open" => 1,
                    _ => 2,
                };
                self.breaker
                    .get_or_create(&NameLabel {
                        name: fields.get("breaker").to_owned(),
                    })
                    .set(state);
            }
            _ => {}
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(timed) = span.extensions_mut().remove::<Timed>() else {
            return;
        };
        let elapsed = timed.started.elapsed().as_secs_f64();
        let f = &timed.fields;
        match span.name() {
            "consume" => {
                let (consumer, topic, outcome) =
                    (f.get("consumer"), f.get("topic"), f.get("outcome"));
                if outcome.is_empty() {
                    return; // interrupted by shutdown or a failure: redelivered later
                }
                self.processed
                    .get_or_create(&ProcessedLabels {
                        consumer: consumer.into(),
                        topic: topic.into(),
                        outcome: outcome.into(),
                    })
                    .inc();
                self.processing
                    .get_or_create(&ConsumerTopic {
                        consumer: consumer.into(),
                        topic: topic.into(),
                    })
                    .observe(elapsed);
                if let Some(kind) = f.0.get("failure") {
                    self.failed
                        .get_or_create(&FailedLabels {
                            consumer: consumer.into(),
                            topic: topic.into(),
                            kind: kind.clone(),
                        })
                        .inc();
                }
                if let Some(reason) = f.0.get("dlq_reason") {
                    self.dead_letters
                        .get_or_create(&DeadLetterLabels {
                            consumer: consumer.into(),
                            topic: topic.into(),
                            reason: reason.clone(),
                        })
                        .inc();
                }
                if outcome == "applied" {
                    for status in timed.moved_to {
                        self.orders.get_or_create(&StatusLabel { status }).inc();
                    }
                }
            }
            "payment" => {
                self.payment
                    .get_or_create(&OutcomeLabel {
                        outcome: f.get("outcome").into(),
                    })
                    .observe(elapsed);
            }
            "relay_batch" => {
                let published: u64 = f.get("published").parse().unwrap_or(0);
                if published > 0 {
                    self.relay_published
                        .get_or_create(&DatabaseLabel {
                            database: f.get("database").into(),
                        })
                        .inc_by(published);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Instrument;
    use tracing_subscriber::layer::SubscriberExt;

    fn with_layer(metrics: &Metrics, f: impl FnOnce()) {
        let subscriber = tracing_subscriber::registry().with(SpanMetrics::new(metrics));
        tracing::subscriber::with_default(subscriber, f);
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn a_consume_span_becomes_a_count_and_a_duration() {
        let metrics = Metrics::new();
        with_layer(&metrics, || {
            let span = tracing::info_span!(
                "consume",
                consumer = "payment-service",
                topic = "orders",
                outcome = tracing::field::Empty,
                failure = tracing::field::Empty,
                dlq_reason = tracing::field::Empty,
            );
            span.record("outcome", "dead_lettered");
            span.record("failure", "permanent");
            span.record("dlq_reason", "unreadable_envelope");
        });
        let text = metrics.encode();
        for expected in [
            r#"events_processed_total{consumer="payment-service",topic="orders",outcome="dead_lettered"} 1"#,
            r#"events_failed_total{consumer="payment-service",topic="orders",kind="permanent"} 1"#,
            r#"dlq_messages_total{consumer="payment-service",topic="orders",reason="unreadable_envelope"} 1"#,
            r#"event_processing_duration_seconds_count{consumer="payment-service",topic="orders"} 1"#,
        ] {
            assert!(text.contains(expected), "missing {expected}:\n{text}");
        }
    }

    #[test]
    fn a_transition_counts_only_when_its_consume_span_applied() {
        let metrics = Metrics::new();
        with_layer(&metrics, || {
            for outcome in ["retried", "applied"] {
                let span = tracing::info_span!(
                    "consume",
                    consumer = "order-service",
                    topic = "payments",
                    outcome = tracing::field::Empty
                );
                span.in_scope(|| tracing::info!(target: "phase2_events::services::order", to = "paid", "{}", ORDER_MOVED));
                span.record("outcome", outcome);
            }
            tracing::info!(target: "phase2_events::services::order", "{}", ORDER_PLACED);
        });
        let text = metrics.encode();
        assert_eq!(
            line(&text, r#"orders_total{status="paid"}"#),
            Some(r#"orders_total{status="paid"} 1"#),
            "the rolled-back attempt is not counted:\n{text}"
        );
        assert!(
            text.contains(r#"orders_total{status="placed"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_payment_span_is_timed_by_outcome_and_the_breaker_state_is_a_gauge() {
        let metrics = Metrics::new();
        let subscriber = tracing_subscriber::registry().with(SpanMetrics::new(&metrics));
        let _guard = tracing::subscriber::set_default(subscriber);
        let span = tracing::info_span!("payment", outcome = tracing::field::Empty);
        async { tokio::time::sleep(std::time::Duration::from_millis(30)).await }
            .instrument(span.clone())
            .await;
        span.record("outcome", "captured");
        drop(span);
        tracing::info!(
            target: "common::resilience::breaker",
            breaker = "payment-provider",
            to = "open",
            "{}",
            BREAKER_CHANGED
        );
        let text = metrics.encode();
        // 30 ms lands above the 25 ms bound and within the 50 ms one.
        assert!(
            text.contains(r#"payment_duration_seconds_bucket{le="0.025",outcome="captured"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"payment_duration_seconds_bucket{le="0.05",outcome="captured"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"circuit_breaker_state{name="payment-provider"} 2"#),
            "{text}"
        );
    }
}
