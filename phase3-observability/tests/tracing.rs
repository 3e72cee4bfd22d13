//! One order is one trace: from `POST /orders` through the outbox relay, Kafka, every
//! consumer (order saga, payment, inventory, notification, delivery), the payment
//! provider's HTTP call and the delivery ticker's later events — one trace id, carried
//! by W3C `traceparent` in HTTP headers, the event envelope and Kafka headers.
//! Spans are collected with OpenTelemetry's in-memory exporter.

mod support;

use opentelemetry::Value;
use opentelemetry_sdk::trace::SpanData;
use phase2_events::flow::Service;
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;
use support::{Options, System};

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            Value::String(s) => s.to_string(),
            other => other.to_string(),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_order_is_one_trace_across_every_service() {
    let system = System::start(Options {
        capture_spans: true,
        ..Options::default()
    })
    .await;
    let id = system.place().await;
    system
        .wait_delivered(std::slice::from_ref(&id), Duration::from_secs(90))
        .await;
    // The last consumers (notification of OrderDelivered) finish a moment later.
    let notification = system.ns(Service::Notification.group());
    let mut last = Vec::new();
    for _ in 0..100 {
        last = system.spans.get_finished_spans().unwrap();
        let done = last.iter().any(|s| {
            s.name == "consume"
                && attribute(s, "consumer").as_deref() == Some(notification.as_str())
                && attribute(s, "event_type").as_deref() == Some("OrderDelivered")
        });
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spans = last;

    let post = spans
        .iter()
        .find(|s| {
            s.name == "request"
                && attribute(s, "method").as_deref() == Some("POST")
                && attribute(s, "path").as_deref() == Some("/orders")
        })
        .expect("a span for POST /orders");
    let trace = post.span_context.trace_id();
    let in_trace: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect();

    let consumers: BTreeSet<String> = in_trace
        .iter()
        .filter(|s| s.name == "consume")
        .filter_map(|s| attribute(s, "consumer"))
        .collect();
    for service in Service::ALL.map(Service::group) {
        assert!(
            consumers.contains(&system.ns(service)),
            "{service} consumed within the order's trace; consumers in it: {consumers:?}"
        );
    }
    let names: BTreeSet<&str> = in_trace.iter().map(|s| s.name.as_ref()).collect();
    for name in [
        "request",
        "relay_publish",
        "relay_batch",
        "payment",
        "payment_attempt",
        "consume",
    ] {
        if name == "relay_batch" {
            continue; // a batch may carry several orders: it is not a child of one
        }
        assert!(
            names.contains(name),
            "a {name} span in the trace; have {names:?}"
        );
    }
    // The provider's side of the charge joined too: its request span, from `traceparent`.
    assert!(
        in_trace
            .iter()
            .any(|s| s.name == "request" && attribute(s, "path").as_deref() == Some("/payments")),
        "the provider's POST /payments is in the trace"
    );
    // The delivery ticker's events (stored with the order's traceparent) continue it.
    let event_types: BTreeSet<String> = in_trace
        .iter()
        .filter(|s| s.name == "consume")
        .filter_map(|s| attribute(s, "event_type"))
        .collect();
    for event in [
        "OrderPlaced",
        "PaymentCompleted",
        "StockReserved",
        "OrderConfirmed",
        "DeliveryPreparing",
        "OrderDelivered",
    ] {
        assert!(
            event_types.contains(event),
            "{event} consumed in the trace; have {event_types:?}"
        );
    }
    // Every span but the root has its parent in the same trace: a tree, not fragments.
    let ids: HashSet<_> = in_trace.iter().map(|s| s.span_context.span_id()).collect();
    let orphans: Vec<_> = in_trace
        .iter()
        .filter(|s| s.span_context.span_id() != post.span_context.span_id())
        .filter(|s| !ids.contains(&s.parent_span_id))
        .map(|s| s.name.to_string())
        .collect();
    assert!(
        orphans.is_empty(),
        "spans whose parent is missing: {orphans:?}"
    );
    // Nothing else of this order started a trace of its own.
    let other_traces: HashSet<_> = spans
        .iter()
        .filter(|s| s.name == "consume" && attribute(s, "order_id").as_deref() == Some(id.as_str()))
        .map(|s| s.span_context.trace_id())
        .collect();
    assert_eq!(
        other_traces.len(),
        1,
        "every event of the order in one trace"
    );
    println!(
        "order {id}: one trace of {} spans, {} consumers, events {:?}",
        in_trace.len(),
        consumers.len(),
        event_types
    );
    system.stop().await;
}
