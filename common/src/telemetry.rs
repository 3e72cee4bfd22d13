//! Structured logging: one JSON object per line.
//!
//! Each line carries the list of spans it was emitted in (`spans`), so a line logged
//! deep inside a payment attempt still shows the `request_id` of the HTTP request that
//! caused it. `RUST_LOG` filters as usual (default `info`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// A JSON subscriber writing to `writer`. Tests pass an in-memory writer to assert on
/// what was logged; binaries use [`init_json_logs`].
pub fn json_subscriber<W>(writer: W, default_filter: &str) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(true)
        .with_target(true)
        .with_env_filter(filter)
        .with_writer(writer)
        .finish()
}

/// Installs JSON logging to stdout for the whole process.
pub fn init_json_logs() {
    let subscriber = json_subscriber(std::io::stdout, "info");
    // Ignore the error of a second call (tests that build several apps).
    let _ = tracing::subscriber::set_global_default(subscriber);
}
