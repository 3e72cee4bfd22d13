//! The page to watch, in a real browser (the harness: `src/testing/page.rs`): phase 2
//! has no tracing, so the page says so where a trace id would be.

use phase2_events::flow::Service;
use phase2_events::testing::page::watch_an_order;
use phase2_events::testing::{Options, TestSystem};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_browser_orders_from_the_page_and_watches_it_reach_delivered() {
    let system = TestSystem::start(Options {
        services: &[Service::Payment, Service::Inventory, Service::Delivery],
        ..Options::default()
    })
    .await;
    let seen = watch_an_order(Path::new(env!("CARGO_BIN_EXE_phase2-events")), &system).await;
    assert_eq!(seen.trace_id, "(none: tracing is off)");
    system.stop().await;
}
