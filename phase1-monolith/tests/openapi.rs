//! The OpenAPI documents in `openapi/` are what the code generates.
//!
//! A handler or body type that changed without its document fails here, with the
//! command that regenerates it (`FERRISEATS_UPDATE_OPENAPI=1 cargo test --workspace
//! --test openapi`); the diff then shows a reviewer what clients will see change.

use common::http::openapi::assert_checked_in;
use std::path::Path;

fn checked_in(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("openapi")
        .join(name)
}

#[test]
fn the_orders_api_document_is_checked_in() {
    assert_checked_in(
        &phase1_monolith::startup::api().1,
        &checked_in("orders.json"),
    );
}

#[test]
fn the_provider_simulator_document_is_checked_in() {
    assert_checked_in(
        &common::payment::Simulator::api().1,
        &checked_in("provider.json"),
    );
}
