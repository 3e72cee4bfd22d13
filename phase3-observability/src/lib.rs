//! # FerrisEats phase 3 — observability that finds the planned incidents
//!
//! Phase 2's services, unchanged, made visible: metrics on `/metrics`, one trace per
//! order across every service, and planned incidents to find with them. Phase 3 adds
//! instrumentation *around* the phase 2 code — a tracing layer, router middleware,
//! probes and proxies — and copies none of it.
//!
//! ## Layout
//!
//! | module         | what it shows                                                        |
//! |----------------|----------------------------------------------------------------------|
//! | [`metrics`]    | the Prometheus registry, `GET /metrics`, HTTP metrics by matched route |
//! | [`signals`]    | spans → metrics: events, failures, DLQ, payments, orders, breaker     |
//! | [`probes`]     | sampled quantities: consumer lag, DLQ depth, outbox backlog and age, process memory and CPU |
//! | [`telemetry`]  | the subscriber: JSON logs with trace ids, OpenTelemetry + OTLP, W3C propagation |
//! | [`incidents`]  | the planned incidents and their switches                             |
//! | [`ops`]        | the ops server: `/metrics`, `/health`, `/admin/incidents`            |
//! | [`node`]       | one process: phase 2's services with all of the above wired around them |
//! | `testing`      | the test harness: a whole observed system in the test's process (feature `testing`) |
//! | [`client`]     | the `incident` command: switch incidents of a running process        |
//! | [`scrape`]     | reading `/metrics` back: samples, and percentiles from histogram buckets |

pub mod client;
pub mod incidents;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod probes;
pub mod scrape;
pub mod signals;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

use crate::metrics::Metrics;

/// What a process records into, made before anything logs: the registry with the
/// process collector, the span-metrics layer and the leak (its layer goes into the
/// subscriber; its switch into the node's incidents).
#[derive(Debug, Clone)]
pub struct Instruments {
    pub metrics: Metrics,
    pub spans: signals::SpanMetrics,
    pub leak: incidents::Leak,
}

impl Instruments {
    /// The instruments of a process named `service`, with the tracing subscriber
    /// installed around them (logs as JSON on stdout, spans to OTLP). Call once,
    /// first thing; shut the returned provider down on exit to flush its traces.
    pub fn install(
        service: &str,
        leak_bytes_per_event: usize,
    ) -> anyhow::Result<(Instruments, opentelemetry_sdk::trace::SdkTracerProvider)> {
        let instruments = Instruments::new(leak_bytes_per_event);
        let provider = telemetry::tracer_provider(service)?;
        telemetry::install(
            &provider,
            instruments.spans.clone(),
            instruments.leak.layer(),
            "info",
        )?;
        Ok((instruments, provider))
    }

    pub fn new(leak_bytes_per_event: usize) -> Instruments {
        let metrics = Metrics::new();
        metrics.register_collector(probes::ProcessCollector);
        Instruments {
            spans: signals::SpanMetrics::new(&metrics),
            leak: incidents::Leak::new(leak_bytes_per_event),
            metrics,
        }
    }
}
