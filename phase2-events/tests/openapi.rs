//! `openapi/order.json` is what the code generates (see phase 1's `tests/openapi.rs`).

#[test]
fn the_order_api_document_is_checked_in() {
    common::http::openapi::assert_checked_in(
        &phase2_events::services::order::routes().1,
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/order.json"),
    );
}
