//! `phase4-chaos load` against the gateway in front of phase 2's real order API
//! (PostgreSQL, Kafka) with its limits in the real Redis.

mod support;

use phase4_chaos::load::mix::Endpoint;
use phase4_chaos::load::run;
use support::{Door, load_args, order_api};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mix_reaches_every_endpoint_and_thresholds_decide_the_verdict() {
    let system = order_api().await;
    let door = Door::open(&system.order_url, &[]).await;
    let args = load_args(
        &door.url,
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
    door.close().await;
    system.stop().await;
}
