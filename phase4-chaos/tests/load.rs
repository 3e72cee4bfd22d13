//! `phase4-chaos load` against the gateway in front of phase 2's real order API
//! (PostgreSQL, Kafka) with its limits in the real Redis.

use clap::Parser;
use common::shutdown::CancellationToken;
use phase2_events::flow::Service;
use phase2_events::testing::{Options, TestSystem};
use phase4_chaos::gateway::{Gateway, GatewaySettings};
use phase4_chaos::load::mix::Endpoint;
use phase4_chaos::load::run::{self, LoadArgs};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
struct Flags {
    #[command(flatten)]
    gateway: GatewaySettings,
}

#[derive(Debug, Parser)]
struct LoadFlags {
    #[command(flatten)]
    load: LoadArgs,
}

async fn gateway(upstream: &str, args: &[&str]) -> (String, CancellationToken) {
    let mut argv = vec!["gateway", "--upstream", upstream];
    argv.extend_from_slice(args);
    let gateway = Gateway::new(Flags::parse_from(argv).gateway)
        .await
        .expect("the gateway needs Redis: start it with `cargo xtask up`");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(gateway.serve(listener, ops, stop.clone()));
    (url, stop)
}

fn load(url: &str, args: &[&str]) -> LoadArgs {
    let mut argv = vec!["load", "--url", url];
    argv.extend_from_slice(args);
    LoadFlags::parse_from(argv).load
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mix_reaches_every_endpoint_and_thresholds_decide_the_verdict() {
    let system = TestSystem::start(Options {
        services: &[Service::Order],
        ..Options::default()
    })
    .await;
    let (url, stop) = gateway(&system.order_url, &[]).await;
    let args = load(
        &url,
        &[
            "--rate",
            "40",
            "--duration",
            "3s",
            "--seed",
            "7",
            "--customers",
            "20",
            "--slo",
            "p99<5s",
            "--slo",
            "errors<1%",
            "--slo",
            "p99<1us",
        ],
    );
    let report = run::run(&args).await.unwrap();

    assert_eq!(report.offered_per_s, 40.0, "120 requests over 3 s");
    assert_eq!(report.totals.sent + report.dropped, 120);
    assert_eq!(report.totals.errors(), 0, "{:?}", report.first_errors);
    for endpoint in Endpoint::ALL {
        let seen = report.endpoints.iter().find(|e| e.endpoint == endpoint);
        assert!(
            seen.is_some_and(|e| e.counts.ok > 0),
            "{endpoint:?} was sent and answered 2xx"
        );
    }
    // Duplicates replayed earlier orders: no more orders exist than were placed.
    let placed = report
        .endpoints
        .iter()
        .find(|e| e.endpoint == Endpoint::Place)
        .unwrap()
        .counts
        .ok;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&system.orders_db)
        .await
        .unwrap();
    assert_eq!(
        stored, placed as i64,
        "a duplicate submit never creates a second order"
    );

    let verdicts: Vec<(String, bool)> = report
        .slos
        .iter()
        .map(|r| (r.slo.clone(), r.pass))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("p99<5s".to_owned(), true),
            ("errors<1%".to_owned(), true),
            ("p99<1us".to_owned(), false),
        ]
    );
    assert!(!report.passed, "one failed threshold fails the run");
    stop.cancel();
    system.stop().await;
}
