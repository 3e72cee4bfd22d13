//! One subscriber, four outputs: JSON logs, OpenTelemetry traces, span metrics and the
//! memory-leak incident's hook — all fed by the same `tracing` spans.
//!
//! * **Traces.** [`tracer_provider`] makes the OpenTelemetry SDK's provider: spans are
//!   always created (so log lines carry a `trace_id`), and exported over OTLP/HTTP
//!   only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (e.g. `http://127.0.0.1:4318`,
//!   Jaeger from the compose file). The batch processor exports from a thread of its
//!   own, with the blocking HTTP client (CRATES.md: the async one panics there).
//! * **Propagation.** [`W3cPropagation`] fills in `common::telemetry`'s seam with the
//!   W3C `traceparent` format: phase 2 calls `continue_trace` where a request or a
//!   message arrives and `current_traceparent` where one leaves (HTTP headers, the
//!   event envelope, Kafka headers), so one order is one trace across every service.
//! * **Logs** are phase 1's JSON lines plus `trace_id` and `span_id`: from a log line
//!   to its trace in Jaeger, and back with a `grep`.
//! * **Filters.** `RUST_LOG` filters the logs only. Traces and metrics see INFO spans
//!   of our own crates whatever `RUST_LOG` says: turning logs down must not blind the
//!   dashboards, and nothing below INFO (or from hyper, sqlx, …) is ever built into a
//!   span, which is what keeps the overhead small.

use crate::incidents::LeakLayer;
use crate::signals::SpanMetrics;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use tracing::dispatcher::WeakDispatch;
use tracing::{Event, Level, Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;

/// The tracer provider for `service`: OTLP/HTTP export when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, none otherwise.
pub fn tracer_provider(service: &str) -> anyhow::Result<SdkTracerProvider> {
    let builder = SdkTracerProvider::builder().with_resource(resource(service));
    let builder = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
                .map_err(|err| anyhow::anyhow!("OTLP exporter for {endpoint}: {err}"))?;
            builder.with_batch_exporter(exporter)
        }
        _ => builder,
    };
    Ok(builder.build())
}

/// The resource every span of this process carries: `service.name`.
pub fn resource(service: &str) -> Resource {
    Resource::builder()
        .with_service_name(format!("ferriseats-{service}"))
        .build()
}

/// Our crates, at INFO: what traces and metrics are made of.
fn ours() -> Targets {
    Targets::new()
        .with_target("common", Level::INFO)
        .with_target("phase1_monolith", Level::INFO)
        .with_target("phase2_events", Level::INFO)
        .with_target("phase3_observability", Level::INFO)
}

/// Installs the process-wide subscriber (and the propagation). Call once, early.
/// Keep the provider to [`SdkTracerProvider::shutdown`] it at exit: that flushes
/// the spans still waiting in the batch. `default_logs` filters the log lines when
/// `RUST_LOG` is not set (`info`).
pub fn install(
    provider: &SdkTracerProvider,
    metrics: SpanMetrics,
    leak: LeakLayer,
    default_logs: &str,
) -> anyhow::Result<()> {
    let subscriber = subscriber(provider, metrics, leak, default_logs, std::io::stdout);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|_| anyhow::anyhow!("a tracing subscriber is already installed"))?;
    common::telemetry::install_propagation(W3cPropagation);
    Ok(())
}

/// The subscriber of [`install`], writing its log lines to `writer`.
pub fn subscriber<W>(
    provider: &SdkTracerProvider,
    metrics: SpanMetrics,
    leak: LeakLayer,
    default_logs: &str,
    writer: W,
) -> impl Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let logs_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_logs));
    let dispatch = DispatchSlot::default();
    let logs = tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(JsonWithTrace::new(dispatch.clone()))
        .with_writer(writer)
        .with_filter(logs_filter);
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("ferriseats"))
        .with_filter(ours());
    tracing_subscriber::registry()
        .with(dispatch)
        .with(logs)
        .with(traces)
        .with(metrics.with_filter(ours()))
        .with(leak.with_filter(ours()))
}

/// `common::telemetry`'s propagation seam, in the W3C Trace Context format.
#[derive(Debug, Clone, Copy)]
pub struct W3cPropagation;

impl common::telemetry::TracePropagation for W3cPropagation {
    fn continue_trace(&self, span: &Span, traceparent: &str) {
        let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        let parent = TraceContextPropagator::new().extract(&carrier);
        // Fails only for a span already entered or not traced: it then keeps its own.
        let _ = span.set_parent(parent);
    }

    fn traceparent(&self, span: &Span) -> Option<String> {
        let context = span.context();
        if !context.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
        carrier.remove("traceparent")
    }
}

/// The subscriber itself, for the log formatter: the OpenTelemetry context of a span
/// is looked up through it (`tracing_opentelemetry::get_otel_context`). A layer that
/// only remembers the dispatch it was registered with.
#[derive(Debug, Clone, Default)]
pub struct DispatchSlot(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> Layer<S> for DispatchSlot {
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.0.set(subscriber.downgrade());
    }
}

/// tracing-subscriber's JSON lines, with `trace_id` and `span_id` in front.
#[derive(Debug)]
pub struct JsonWithTrace {
    inner: Format<Json>,
    dispatch: DispatchSlot,
}

impl JsonWithTrace {
    pub fn new(dispatch: DispatchSlot) -> Self {
        JsonWithTrace {
            dispatch,
            inner: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .with_target(true),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithTrace
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let ids = ctx.lookup_current().and_then(|span| {
            let dispatch = self.dispatch.0.get()?.upgrade()?;
            let context = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
            let span_context = context.span().span_context().clone();
            span_context
                .is_valid()
                .then(|| (span_context.trace_id(), span_context.span_id()))
        });
        match (ids, line.strip_prefix('{')) {
            (Some((trace_id, span_id)), Some(rest)) => write!(
                writer,
                "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
            ),
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use common::telemetry::TracePropagation;
    use common::testing::LogBuffer;

    #[test]
    fn log_lines_carry_the_trace_and_a_span_continues_a_remote_trace() {
        let provider = SdkTracerProvider::builder().build();
        let buffer = LogBuffer::default();
        let subscriber = subscriber(
            &provider,
            SpanMetrics::new(&Metrics::new()),
            crate::incidents::Leak::new(0).layer(),
            "info",
            buffer.clone(),
        );
        let remote = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let outgoing = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", request_id = "req-1");
            W3cPropagation.continue_trace(&span, remote);
            let _entered = span.enter();
            tracing::info!("inside");
            W3cPropagation.traceparent(&Span::current())
        });
        let text = buffer.contents();
        let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(
            line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
            "{line}"
        );
        assert_eq!(line["span_id"].as_str().unwrap().len(), 16, "{line}");
        assert_ne!(line["span_id"], "00f067aa0ba902b7", "a span of its own");
        assert_eq!(
            line["spans"][0]["request_id"], "req-1",
            "next to the request id"
        );
        assert_eq!(line["message"], "inside");
        // What goes out names the same trace and this span as the parent.
        let outgoing = outgoing.expect("a traced span has a traceparent");
        assert!(
            outgoing.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{outgoing}"
        );
        assert!(outgoing.contains(line["span_id"].as_str().unwrap()));
    }
}
