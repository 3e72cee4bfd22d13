//! Liveness and readiness differ on purpose (what phase 5's probes rely on): with
//! the process's database cut off (the fault proxy resets every connection),
//! `/health` still answers 200 — a restart would cure nothing — while `/ready` answers
//! 503 naming the database; healed, `/ready` is 200 again; and from SIGTERM on
//! (`draining`) `/ready` is 503 `draining` while `/health` stays 200, so that the
//! endpoints drop the process while it finishes its work.

use phase2_events::fault_proxy::FaultProxy;
use phase3_observability::incidents::Incidents;
use phase3_observability::metrics::Metrics;
use phase3_observability::ops::{Readiness, router};
use reqwest::StatusCode;
use std::net::ToSocketAddrs;

/// `GET path` from the ops server at `base`: the status and the JSON body.
async fn get(base: &str, path: &str) -> (StatusCode, serde_json::Value) {
    let response = reqwest::get(format!("{base}{path}")).await.unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_lost_database_makes_a_process_unready_not_dead_and_so_does_draining() {
    let admin = common::testing::postgres_admin_url();
    let authority = admin
        .split_once('@')
        .map_or(admin.as_str(), |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let postgres = authority
        .to_socket_addrs()
        .unwrap()
        .next()
        .expect("PostgreSQL's address (`cargo xtask up`)");
    let proxy = FaultProxy::start(([127, 0, 0, 1], 0).into(), postgres)
        .await
        .unwrap();
    let through = admin.replacen(&authority, &proxy.addr().to_string(), 1);
    let pool = common::db::connect(&through, 1)
        .await
        .unwrap_or_else(|err| {
            panic!("PostgreSQL is required (start it with `cargo xtask up`): {err:#}")
        });
    let metrics = Metrics::new();
    let incidents = Incidents::builder().build(&metrics);
    let readiness = Readiness {
        databases: vec![("orders".to_owned(), pool)],
        ..Readiness::default()
    };
    let draining = readiness.draining.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(
        axum::serve(listener, router("order", metrics, incidents, readiness)).into_future(),
    );
    let app = base.as_str();

    let (status, body) = get(app, "/ready").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );

    proxy.faults().set_down(true);
    let (status, body) = get(app, "/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "unready");
    assert_eq!(body["database"], "orders");
    let (status, _) = get(app, "/health").await;
    assert_eq!(status, StatusCode::OK, "alive while its database is away");

    proxy.faults().set_down(false);
    let mut ready = false;
    for _ in 0..20 {
        if get(app, "/ready").await.0 == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "ready again once the database answers");

    draining.cancel();
    let (status, body) = get(app, "/ready").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("draining"))
    );
    let (status, _) = get(app, "/health").await;
    assert_eq!(status, StatusCode::OK, "alive while it drains");
    server.abort();
    proxy.stop().await;
}
