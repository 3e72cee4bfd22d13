//! The page to watch, served by phase 3's order API (phase 2's harness:
//! `phase2-events/src/testing/page.rs`): with tracing on, each status pushed to the
//! page carries the order's trace id, the one to look the whole flow up by in Jaeger.

use phase2_events::flow::Service;
use phase2_events::testing::page::watch_an_order;
use phase2_events::testing::{Options, TestSystem};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_shows_the_trace_id_of_the_order() {
    let system = TestSystem::start(Options {
        services: &[Service::Payment, Service::Inventory, Service::Delivery],
        ..Options::default()
    })
    .await;
    let seen = watch_an_order(
        Path::new(env!("CARGO_BIN_EXE_phase3-observability")),
        &system,
    )
    .await;
    assert!(
        seen.trace_id.len() == 32 && seen.trace_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "no trace id on the page: {seen:?}"
    );
    system.stop().await;
}
