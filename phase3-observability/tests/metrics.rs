//! The metrics of an order flow, read from `/metrics` as Prometheus would: every
//! signal the issue lists is there, with bounded labels, and agrees with what
//! happened — 5 orders placed are 5 orders delivered, 5 captured payments, no lag
//! left, an empty outbox — and a poison message shows up as a dead letter.

mod support;

use phase2_events::flow::Service;
use phase3_observability::scrape::quantile;
use std::time::Duration;
use support::{Options, System, value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_flow_shows_in_every_metric() {
    let system = System::start(Options::default()).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(system.place().await);
    }
    system.wait_delivered(&ids, Duration::from_secs(90)).await;

    // A poison message on `orders`: every consumer of it dead-letters it.
    let producer = phase2_events::kafka::producer(&phase2_events::kafka::brokers()).unwrap();
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&system.ns("orders"))
                .key("poison")
                .payload("not json"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    let payment = system.ns(Service::Payment.group());
    let orders_topic = system.ns("orders");

    let s = system
        .scrape_until(Duration::from_secs(60), "the flow is fully counted", |s| {
            value(s, "orders_total", &[("status", "delivered")]) >= 5.0
                && value(s, "dlq_messages_total", &[("consumer", &payment)]) >= 1.0
                && value(s, "dlq_depth", &[("topic", &orders_topic)]) >= 1.0
                // Lag is sampled: wait until the last events are committed and seen.
                && s.sum("kafka_consumer_lag", &[]) == Some(0.0)
                && value(s, "outbox_backlog", &[]) == 0.0
                // Every charge made: the payment worker's queue is empty again.
                && value(s, "payments_due", &[]) == 0.0
        })
        .await;

    for status in common::domain::OrderStatus::HAPPY_PATH.map(|s| s.as_str()) {
        assert_eq!(
            value(&s, "orders_total", &[("status", status)]),
            5.0,
            "orders_total{{status={status}}}"
        );
    }
    assert_eq!(value(&s, "orders_total", &[("status", "cancelled")]), 0.0);
    assert_eq!(
        value(
            &s,
            "http_requests_total",
            &[("method", "POST"), ("route", "/orders"), ("status", "202")]
        ),
        5.0
    );
    assert!(
        s.matching(
            "http_request_duration_seconds_bucket",
            &[("route", "/orders/{id}")]
        )
        .count()
            > 0,
        "GET /orders/{{id}} by its matched route, never by the raw path"
    );
    assert!(
        !s.0.iter()
            .any(|x| x.labels.values().any(|v| v.contains(&ids[0]))),
        "no order id in any label"
    );
    let payments = s.histogram("payment_duration_seconds", &[("outcome", "captured")]);
    assert_eq!(
        payments.last().map(|b| b.1),
        Some(5.0),
        "5 captured payments timed"
    );
    assert!(quantile(0.99, &payments).is_some());
    assert!(
        value(
            &s,
            "events_processed_total",
            &[
                ("consumer", &payment),
                ("topic", &orders_topic),
                ("outcome", "applied")
            ]
        ) >= 5.0
    );
    assert_eq!(
        value(
            &s,
            "dlq_messages_total",
            &[
                ("consumer", &payment),
                ("topic", &orders_topic),
                ("reason", "unreadable_envelope")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "events_failed_total",
            &[("consumer", &payment), ("kind", "permanent")]
        ),
        1.0
    );
    assert!(
        value(
            &s,
            "event_processing_duration_seconds_count",
            &[("consumer", &payment)]
        ) >= 6.0
    );
    // Every group the system has is measured, retry groups included.
    for service in Service::ALL.map(Service::group) {
        let group = system.ns(service);
        assert!(
            s.matching("kafka_consumer_lag", &[("group", &group)])
                .count()
                >= 1,
            "lag of {group}"
        );
        let retry = format!("{group}.retry");
        assert!(
            s.matching("kafka_consumer_lag", &[("group", &retry)])
                .count()
                >= 1,
            "lag of {retry}"
        );
    }
    assert!(
        value(&s, "relay_published_total", &[("database", "order")]) >= 30.0,
        "6 events per order from the order outbox"
    );
    assert!(
        s.sum("outbox_oldest_age_seconds", &[("database", "order")])
            .is_some()
    );
    assert!(
        s.sum("payments_oldest_due_age_seconds", &[]).is_some(),
        "the payment worker's queue is sampled"
    );
    assert_eq!(
        value(&s, "circuit_breaker_state", &[("name", "payment-provider")]),
        0.0
    );
    assert!(value(&s, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(value(&s, "process_cpu_seconds_total", &[]) > 0.0);
    for incident in [
        "payment-slowdown",
        "notification-backlog",
        "memory-leak",
        "cpu-hot-path",
    ] {
        assert_eq!(
            s.sum("incident_active", &[("incident", incident)]),
            Some(0.0),
            "incident_active{{incident={incident}}} is exported, and off"
        );
    }
    println!(
        "5 orders: {} events applied by payment, payment p99 {:.3} s, 1 dead letter",
        value(
            &s,
            "events_processed_total",
            &[("consumer", &payment), ("outcome", "applied")]
        ),
        quantile(0.99, &payments).unwrap()
    );
    system.stop().await;
}
