//! Lesson: logs without a correlation id are nearly useless. Every JSON line logged
//! while serving a request — in the handler, in each payment attempt, and in the
//! provider that received the forwarded id — carries that request's id.
//!
//! A test binary of its own: it installs a log subscriber that writes to memory.

#[path = "support/mod.rs"]
mod support;

use common::testing::LogBuffer;
use serde_json::Value;
use std::time::Duration;
use support::{Backend, order_body, spawn_app_with};

/// The JSON lines written to `logs`, parsed.
fn json_lines(logs: &LogBuffer) -> Vec<Value> {
    logs.contents()
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"))
        })
        .collect()
}

fn request_id_of(line: &Value) -> Option<&str> {
    line["spans"]
        .as_array()?
        .iter()
        .find(|span| span["name"] == "request")?["request_id"]
        .as_str()
}

// current_thread: the app and the test share one thread, so the thread-local
// subscriber sees every line.
#[tokio::test(flavor = "current_thread")]
async fn every_log_line_of_a_request_carries_its_request_id() {
    let logs = LogBuffer::default();
    let _guard =
        tracing::subscriber::set_default(common::telemetry::json_subscriber(logs.clone(), "info"));
    // Attempts time out (100 ms < 150 ms latency) so the request logs retries too.
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.provider.latency = "150ms".parse().unwrap();
        s.payment.attempt_timeout = Duration::from_millis(100);
        s.payment.max_retries = 1;
        s.payment.deadline = Duration::from_secs(1);
        s.reconcile_after = Duration::from_secs(60);
    })
    .await;

    let send = |request_id: &'static str, customer: &'static str| {
        app.http
            .post(format!("{}/orders", app.address))
            .header("x-request-id", request_id)
            .json(&order_body(customer, &[("cola", 1)]))
            .send()
    };
    let (first, second) = tokio::join!(send("req-alpha", "alice"), send("req-beta", "bob"));
    let first: Value = first.unwrap().json().await.unwrap();
    let second: Value = second.unwrap().json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // the provider's late answers
    app.stop().await;

    let lines = json_lines(&logs);
    for (request_id, order) in [("req-alpha", &first), ("req-beta", &second)] {
        let order_id = order["id"].as_str().unwrap();
        let mine: Vec<&Value> = lines
            .iter()
            .filter(|l| request_id_of(l) == Some(request_id))
            .collect();
        let messages: Vec<&str> = mine.iter().filter_map(|l| l["message"].as_str()).collect();
        for expected in [
            "order stored; charging",
            "payment request handled; answering after simulated latency",
            "payment attempt failed; will retry",
            "payment outcome unknown; order stays in doubt",
            "request finished",
        ] {
            assert!(
                messages.contains(&expected),
                "{request_id}: no line {expected:?} in {messages:#?}"
            );
        }
        // Every line that mentions this order carries this request's id — none
        // carries the other request's id.
        for line in lines.iter().filter(|l| l["order_id"] == order_id) {
            assert_eq!(
                request_id_of(line),
                Some(request_id),
                "line without its request id: {line}"
            );
        }
    }
    // And no line logged inside a request lacks an id.
    for line in &lines {
        if let Some(spans) = line["spans"].as_array()
            && spans.iter().any(|s| s["name"] == "request")
        {
            assert!(
                request_id_of(line).is_some_and(|id| !id.is_empty()),
                "{line}"
            );
        }
    }
}
