//! `openapi/gateway.json` is what the code generates (see phase 1's `tests/openapi.rs`).

#[test]
fn the_gateway_document_is_checked_in() {
    common::http::openapi::assert_checked_in(
        &phase4_chaos::gateway::routes().1,
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/gateway.json"),
    );
}
