//! # FerrisEats phase 4: load and chaos
//!
//! Phase 4 puts the platform under 500–1000+ requests per second with faults injected,
//! and checks that nothing accepted is lost, that it recovers without a human and that
//! no failure cascades. This crate starts with what every one of those lessons stands
//! on: generating load honestly and measuring what comes out.
//!
//! | module | what it holds |
//! |---|---|
//! | [`load`] | the closed- and open-model HTTP load generators, HDR latency histograms |
//! | [`pgbench`] | PostgreSQL's own benchmark running one order's SQL: the database's ceiling |
//! | [`gateway`] | the only door for clients: JWT authentication, GCRA rate limits in Redis, forwarding to the order API |
//! | [`bench`] | `cargo xtask bench phase1\|phase2\|phase3`: the benchmarks, the end-to-end observer, queue and CPU sampling, the reports |
//!
//! The binary (`phase4-chaos bench …`, what `cargo xtask bench` runs) only parses
//! the command line and calls [`bench::run`].

pub mod bench;
pub mod chaos;
pub mod gateway;
pub mod load;
pub mod pgbench;
pub mod supervisor;
pub mod system;

/// Flags of type `T` parsed as its command line would parse `args` (environment
/// variables included): how `all`, the benchmarks and the tests build a gateway's or
/// a load run's settings without repeating their defaults.
pub fn parse_flags<T: clap::Args>(args: &[&str]) -> Result<T, clap::Error> {
    #[derive(clap::Parser)]
    struct Flags<T: clap::Args> {
        #[command(flatten)]
        inner: T,
    }
    let argv = std::iter::once("phase4-chaos").chain(args.iter().copied());
    Ok(<Flags<T> as clap::Parser>::try_parse_from(argv)?.inner)
}

/// The routes of a small ops server: `/health` and `/ready` (both "ok": such a
/// process waits on nothing) and `/metrics` from `registry`, `refresh` run before each
/// scrape to bring gauges up to date. The provider's and a running scenario's.
pub fn ops_router(
    registry: std::sync::Arc<prometheus_client::registry::Registry>,
    refresh: impl Fn() + Clone + Send + Sync + 'static,
) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                refresh();
                let registry = registry.clone();
                async move { metrics_response(&registry) }
            }),
        )
}

/// A Prometheus registry as a `/metrics` answer: the OpenMetrics text format, or a
/// problem+json 500 if it cannot be encoded. The gateway, the supervisor and
/// [`ops_router`] serve theirs with it.
pub fn metrics_response(
    registry: &prometheus_client::registry::Registry,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        return common::http::Problem::internal().into_response();
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
