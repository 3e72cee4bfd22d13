//! The README's tour, run as a learner runs it (the runner is `common_local::tour`,
//! the scratch system `phase2_events::testing::tour`): `phase2-events all` started
//! by the tour's first command, every command's output compared with what the README
//! shows. The README's `ferriseats_payments` and `ferriseats:notification:sent` are
//! the scratch's database and key prefix here (and back in the output). Needs
//! PostgreSQL, Redis and Kafka (`cargo xtask up`), and `curl`, `jq`, `psql`,
//! `redis-cli`.

use phase2_events::flow::Topics;
use phase2_events::testing::tour::run_readme_tour;
use std::path::Path;

const PG: &str = "postgres://postgres:postgres@127.0.0.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_tour_prints_what_the_readme_says() {
    run_readme_tour(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        (
            "phase2-events",
            Path::new(env!("CARGO_BIN_EXE_phase2-events")),
        ),
        |tour, s| {
            let notification = Topics::new(&s.namespace).namespaced("notification");
            tour.substitute(
                &format!("{PG}/ferriseats_payments"),
                &s.payment_database_url,
            )
            .substitute(
                &format!("{PG}/ferriseats_inventory"),
                &s.inventory_database_url,
            )
            .substitute(&format!("{PG}/ferriseats_orders"), &s.order_database_url)
            .substitute(
                &format!("{PG}/ferriseats_delivery"),
                &s.delivery_database_url,
            )
            .substitute(
                "ferriseats:notification:",
                &format!("ferriseats:{notification}:"),
            )
            .port(3000, "LISTEN_ADDR")
            .and_then(|t| t.port(3001, "PROVIDER_ADDR"))
            .and_then(|t| t.port(3002, "NOTIFICATION_ADDR"))
            .expect("free ports")
        },
    )
    .await;
}
