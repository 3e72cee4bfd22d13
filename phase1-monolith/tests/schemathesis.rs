//! Schemathesis, a property-based API fuzzer, against the real phase 1: it reads the
//! checked-in OpenAPI documents, generates valid and invalid requests (examples, edge
//! values from the schema, random data, and chains that follow the document's links),
//! and checks every answer: no 5xx, status, content type, headers and body as
//! documented, every invalid request refused with a 4xx.
//!
//! Bounded: `--max-examples` per operation and `--max-time` for the run. After the
//! fuzzing, the books must still balance — thousands of odd requests later, every
//! order that was accepted is stored, settled, and charged exactly once.
//!
//! What each run relaxes, and why, is in `schemathesis/*.toml`.
//!
//! Needs PostgreSQL (`cargo xtask up`) and Schemathesis (`SCHEMATHESIS`, which
//! `cargo xtask test` sets after installing it from PyPI).

#[path = "support/mod.rs"]
mod support;

use common::payment::{LatencyRange, Simulator, SimulatorConfig};
use common::shutdown::CancellationToken;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{Backend, books};

const MAX_EXAMPLES: &str = "25";
const MAX_SECONDS: &str = "30";

fn schemathesis() -> PathBuf {
    let Some(st) = std::env::var_os("SCHEMATHESIS") else {
        panic!(
            "SCHEMATHESIS is not set: run the tests with `cargo xtask test` (it installs \
             Schemathesis into .ferriseats/schemathesis-venv), or set SCHEMATHESIS=path/to/st"
        );
    };
    PathBuf::from(st)
}

fn crate_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// Runs `st run DOCUMENT --url URL`, failing the test with Schemathesis' report.
fn fuzz(document: &str, url: &str, extra: &[&str]) {
    let output = Command::new(schemathesis())
        .arg("--config-file")
        .arg(crate_file(&format!(
            "schemathesis/{}.toml",
            document.trim_end_matches(".json")
        )))
        .arg("--no-color")
        .arg("run")
        .arg(crate_file(&format!("openapi/{document}")))
        .args(["--url", url, "--checks", "all"])
        .args(["--max-examples", MAX_EXAMPLES, "--max-time", MAX_SECONDS])
        .args(["--workers", "2", "--request-timeout", "10"])
        .args(extra)
        // Schemathesis keeps a cache (.schemathesis/) where it runs: not in the crate.
        .current_dir(std::env::temp_dir())
        .output()
        .expect("Schemathesis starts");
    let report = String::from_utf8_lossy(&output.stdout);
    let summary: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("generated") || l.contains(" in ") && l.contains('='))
        .collect();
    println!("{document}: {}", summary.join(" | "));
    assert!(
        output.status.success(),
        "Schemathesis found problems in {document}:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_api_answers_every_generated_request_as_documented() {
    // A provider that misbehaves a little, so the fuzzer also meets 201 cancelled and
    // 202 in-doubt answers.
    let app = support::spawn_app_with(Backend::Postgres, |s| {
        s.provider.failure_rate = 0.2;
        s.provider.decline_rate = 0.1;
        s.provider.latency = "0..20ms".parse().unwrap();
    })
    .await;
    let url = app.address.clone();
    tokio::task::spawn_blocking(move || fuzz("orders.json", &url, &[]))
        .await
        .unwrap();

    app.wait_until_settled(Duration::from_secs(30)).await;
    let orders = app.stored_orders().await;
    let (paid, cancelled) = books::assert_books_balance(&orders, &app.ledger().await, &[]);
    println!("after fuzzing: {paid} paid, {cancelled} cancelled, books balance");
    assert!(
        paid > 0,
        "the fuzzer placed no order that was paid: it never reached the core of the API"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_simulator_answers_every_generated_request_as_documented() {
    // No simulated 503s here: they are documented, but Schemathesis counts every 5xx as
    // a server error. Declines (402) stay.
    let config = SimulatorConfig {
        failure_rate: 0.0,
        decline_rate: 0.1,
        latency: LatencyRange::ZERO,
        ..SimulatorConfig::instant()
    };
    let listener = tokio::net::TcpListener::bind(config.addr).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(Simulator::new(&config).serve(listener, shutdown.clone()));
    // PUT /control changes how every later request behaves: a fuzzer setting the
    // latency to hours would turn the rest of the run into timeouts. So it gets a run
    // of its own, after the others.
    tokio::task::spawn_blocking(move || {
        fuzz("provider.json", &url, &["--exclude-method", "PUT"]);
        fuzz("provider.json", &url, &["--include-method", "PUT"]);
    })
    .await
    .unwrap();
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
