//! Structured logging: one JSON object per line.
//!
//! Each line carries the list of spans it was emitted in (`spans`), so a line logged
//! deep inside a payment attempt still shows the `request_id` of the HTTP request that
//! caused it. `RUST_LOG` filters as usual (default `info`).
//!
//! The second half is the trace-context seam ([`TracePropagation`]): where a trace
//! crosses a process boundary, and nothing else until phase 3 fills it in.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

/// A JSON subscriber writing to `writer`. Tests pass an in-memory writer to assert on
/// what was logged; binaries use [`init_json_logs`].
pub fn json_subscriber<W>(writer: W, default_filter: &str) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(true)
        .with_target(true)
        .with_writer(writer)
        .finish()
        .with(log_filter(default_filter))
}

/// `RUST_LOG` as levels per target (`info`, `warn,phase1_monolith=debug`), or
/// `default` when it is unset or not of that form. Targets rather than `EnvFilter`:
/// the same directives a learner writes, without compiling a regex engine into
/// phase 1 (phase 3, which filters spans by field, uses `EnvFilter`).
pub fn log_filter(default: &str) -> Targets {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse().ok())
        .or_else(|| default.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO))
}

/// Installs JSON logging to stdout for the whole process.
pub fn init_json_logs() {
    let subscriber = json_subscriber(std::io::stdout, "info");
    // Ignore the error of a second call (tests that build several apps).
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// How a binary ends: `main` returns `exit_code(run().await)`. A failure is logged
/// (one JSON line, `"message":"fatal"`, for whoever reads the logs) and printed to
/// stderr as one line, `error: ` and the error's chain joined by `: ` — the last line
/// a learner sees, ending with what to do (see [`crate::unreachable`]). Returning the
/// error from `main` instead would print Rust's `Error: …` / `Caused by:` block, and
/// a backtrace after it whenever `RUST_BACKTRACE` is set, below the line that matters.
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            let line = format!("{err:#}");
            tracing::error!(error = line, "fatal");
            eprintln!("error: {line}");
            std::process::ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------
// Trace context: a seam that phase 3 fills in.
// ---------------------------------------------------------------------------------

use std::sync::OnceLock;
use tracing::Span;

/// How a span joins a distributed trace, and how its place in the trace is written
/// down for the next hop — the W3C `traceparent` header
/// (`00-<trace id>-<parent span id>-<flags>`).
///
/// The services mark the places where a trace crosses a process boundary: an HTTP
/// request arrives ([`continue_trace`] in the request span), an event is consumed
/// (the same, from the message's header), an event or an outgoing request is made
/// ([`current_traceparent`]). Until something installs an implementation — phase 3
/// installs OpenTelemetry's — both are no-ops that cost one atomic load, so phases 1
/// and 2 carry no tracing machinery at all.
pub trait TracePropagation: Send + Sync + 'static {
    /// Makes `span` (not yet entered) a child of the remote span in `traceparent`.
    fn continue_trace(&self, span: &Span, traceparent: &str);
    /// `span`'s own context as a `traceparent` value, if it is being traced.
    fn traceparent(&self, span: &Span) -> Option<String>;
}

static PROPAGATION: OnceLock<Box<dyn TracePropagation>> = OnceLock::new();

/// Installs the process's trace propagation; `false` if one was installed already.
pub fn install_propagation(propagation: impl TracePropagation) -> bool {
    PROPAGATION.set(Box::new(propagation)).is_ok()
}

/// Continues the trace of `traceparent` in `span`; call before the span is first
/// entered. Without a traceparent (or without tracing) the span starts a new trace.
pub fn continue_trace(span: &Span, traceparent: Option<&str>) {
    if let (Some(propagation), Some(traceparent)) = (PROPAGATION.get(), traceparent) {
        propagation.continue_trace(span, traceparent);
    }
}

/// The current span's `traceparent`, to put on an outgoing request or event.
pub fn current_traceparent() -> Option<String> {
    PROPAGATION.get()?.traceparent(&Span::current())
}
