//! The binary, as a learner runs it: `phase3-observability all` with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set exports its spans over OTLP/HTTP (protobuf) to
//! that endpoint — here a small receiver in the test standing in for Jaeger — and
//! flushes what is still batched when it is stopped with SIGTERM.

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use common::testing::{Backend, TestDb};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Default)]
struct Received {
    requests: usize,
    content_types: Vec<String>,
    bytes: Vec<u8>,
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exports_its_traces_over_otlp_and_flushes_them_on_sigterm() {
    // The stand-in collector: OTLP/HTTP is one POST per batch to /v1/traces.
    let received = Arc::new(Mutex::new(Received::default()));
    let sink = received.clone();
    let collector = axum::Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let mut r = sink.lock().unwrap();
                r.requests += 1;
                r.content_types.push(
                    headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned(),
                );
                r.bytes.extend_from_slice(&body);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let mut dbs = Vec::new();
    for _ in 0..4 {
        dbs.push(TestDb::create(Backend::Postgres).await);
    }
    let (api, ops) = (free_port(), free_port());
    let namespace = format!("t{}", uuid::Uuid::now_v7().simple());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_phase3-observability"))
        .arg("all")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("KAFKA_BROKERS", phase2_events::kafka::brokers())
        .env("TOPIC_NAMESPACE", &namespace)
        .env("ORDER_DATABASE_URL", &dbs[0].url)
        .env("PAYMENT_DATABASE_URL", &dbs[1].url)
        .env("INVENTORY_DATABASE_URL", &dbs[2].url)
        .env("DELIVERY_DATABASE_URL", &dbs[3].url)
        .env("LISTEN_ADDR", format!("127.0.0.1:{api}"))
        .env("NOTIFICATION_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("PROVIDER_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("OPS_ADDR", format!("127.0.0.1:{ops}"))
        .env("PAYMENT_FAILURE_RATE", "0")
        .env("PAYMENT_DECLINE_RATE", "0")
        .env("PAYMENT_LATENCY", "0")
        .env("DELIVERY_PREPARE_AFTER", "50ms")
        .env("DELIVERY_DISPATCH_AFTER", "50ms")
        .env("DELIVERY_DELIVER_AFTER", "50ms")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let ready = http
            .get(format!("http://127.0.0.1:{ops}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "phase3-observability exited with {status} before it was ready; it needs \
                 PostgreSQL, Redis and Apache Kafka: start them with `cargo xtask up`"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not ready after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let response = http
        .post(format!("http://127.0.0.1:{api}/orders"))
        .json(&serde_json::json!({"customer_id": "c", "items": [{"sku": "cola", "qty": 2}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    loop {
        let order: serde_json::Value = http
            .get(format!("http://127.0.0.1:{api}/orders/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if order["status"] == "delivered" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{order}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // SIGTERM: the services drain, then the batch processor flushes.
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops within 30 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}");

    {
        let r = received.lock().unwrap();
        assert!(r.requests >= 1, "at least one export");
        assert!(
            r.content_types
                .iter()
                .all(|ct| ct == "application/x-protobuf"),
            "{:?}",
            r.content_types
        );
        for needle in ["ferriseats-all", "consume", "relay_publish", "payment", &id] {
            assert!(
                contains(&r.bytes, needle),
                "{needle:?} in the exported spans"
            );
        }
        println!(
            "{} OTLP exports, {} bytes, for order {id}",
            r.requests,
            r.bytes.len()
        );
    }
    for db in dbs {
        db.drop_database().await;
    }
    phase2_events::kafka::delete_namespace(&phase2_events::kafka::brokers(), &namespace)
        .await
        .unwrap();
}
