//! The Locust file drives the same mix through the gateway, headless and bounded
//! (10 users, 5 s), against phase 2's real order API and the real Redis. Locust comes
//! from PyPI: `cargo xtask test` installs a pinned one and passes it as `LOCUST`.

mod support;

use std::collections::BTreeMap;
use support::{Door, order_api};

fn locust() -> String {
    match std::env::var("LOCUST") {
        Ok(path) if !path.is_empty() => path,
        _ => {
            let on_path = std::process::Command::new("locust")
                .arg("--version")
                .output()
                .is_ok_and(|out| out.status.success());
            assert!(
                on_path,
                "Locust is needed for this test: `cargo xtask test` installs a pinned one \
                 (or set LOCUST=/path/to/locust)"
            );
            "locust".to_owned()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_locust_file_places_polls_and_repeats_orders_through_the_gateway() {
    let locust = locust();
    let system = order_api().await;
    let door = Door::open(&system.order_url, &[]).await;
    let url = door.url.clone();

    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/locust/locustfile.py");
    let output = tokio::process::Command::new(&locust)
        .args([
            "-f",
            file,
            "--headless",
            "--users",
            "10",
            "--spawn-rate",
            "10",
            "--run-time",
            "5s",
            "--host",
            &url,
            "--only-summary",
            "--json",
            "--loglevel",
            "WARNING",
        ])
        .output()
        .await
        .expect("running locust");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "locust failed ({}): {stderr}",
        output.status
    );
    let stats: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
            panic!(
                "locust's --json: {err}: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        });
    let by_name: BTreeMap<String, (u64, u64)> = stats
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_owned(),
                (
                    s["num_requests"].as_u64().unwrap_or(0),
                    s["num_failures"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect();
    for name in ["menu", "place", "status"] {
        let (requests, failures) = by_name.get(name).copied().unwrap_or_default();
        assert!(requests > 0, "{name} was requested: {by_name:?}");
        assert_eq!(failures, 0, "{name} had failures: {by_name:?} {stderr}");
    }
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&system.orders_db)
        .await
        .unwrap();
    assert!(orders > 0, "the orders Locust placed are in the database");

    door.close().await;
    system.stop().await;
}
