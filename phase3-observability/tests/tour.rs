//! The README's tour, run as a learner runs it (see phase 2's `tests/tour.rs`).

use phase2_events::testing::tour::run_readme_tour;
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_tour_prints_what_the_readme_says() {
    run_readme_tour(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        (
            "phase3-observability",
            Path::new(env!("CARGO_BIN_EXE_phase3-observability")),
        ),
        |tour, _| {
            let tour = tour
                .port(3000, "LISTEN_ADDR")
                .and_then(|t| t.port(3001, "PROVIDER_ADDR"))
                .and_then(|t| t.port(3002, "NOTIFICATION_ADDR"))
                .and_then(|t| t.port(9400, "OPS_ADDR"))
                .expect("free ports");
            // `incident on|list` find the ops server through OPS_URL.
            let ops = format!("http://127.0.0.1:{}", tour.port_of(9400).unwrap());
            tour.env("OPS_URL", &ops)
        },
    )
    .await;
}
