//! The README's tour, run as a learner runs it (see phase 2's `tests/tour.rs`):
//! `phase4-chaos all` on a scratch system of its own, every port moved by
//! `PORT_OFFSET` (the platform has a dozen; the tour rewrites the README's
//! well-known ones by the same offset).

use phase2_events::testing::tour::run_readme_tour;
use std::path::Path;

/// Every port `all` listens on, as the README knows them.
const PORTS: [u16; 14] = [
    3000, 3001, 3002, 3100, 3101, 9401, 9402, 9403, 9404, 9405, 9406, 9407, 9410, 9411,
];
const SUPERVISOR: u16 = 9420;

/// An offset under which every port of the platform is free now.
fn free_offset() -> u16 {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    (0..200)
        .map(|i| 20_000 + 137 * i)
        .find(|offset| PORTS.iter().chain([&SUPERVISOR]).all(|p| free(p + offset)))
        .expect("a free range of ports")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_tour_prints_what_the_readme_says() {
    run_readme_tour(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        (
            "phase4-chaos",
            Path::new(env!("CARGO_BIN_EXE_phase4-chaos")),
        ),
        |tour, _| {
            let offset = free_offset();
            let mut tour = tour.env("PORT_OFFSET", &offset.to_string());
            for port in PORTS.iter().chain([&SUPERVISOR]) {
                tour = tour.shifted_port(*port, port + offset);
            }
            tour
        },
    )
    .await;
}
