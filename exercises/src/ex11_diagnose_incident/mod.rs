//! Exercise 11: finding the planned incident from metrics alone.
//!
//! Phase 3's system can be made ill in four ways (phase3-observability/src/
//! incidents.rs). On call you do not know which switch was flipped: you have two
//! scrapes of `/metrics`, a minute apart, and must say what is wrong — and show the
//! numbers that prove it. The checker runs the real system, switches on an incident
//! it keeps to itself (or none), drives traffic, and hands your code the two scrapes,
//! with every `incident*` series removed.

pub mod check;
pub mod solution;
pub mod starter;
crate::yours!("ex11_diagnose_incident");

pub use phase3_observability::scrape::{Samples, quantile};

/// What is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    Healthy,
    /// Payments are slow (the provider, or the network to it).
    PaymentSlowdown,
    /// The notification consumer falls behind (Redis is slow to answer it).
    NotificationBacklog,
    /// The process keeps memory it should have freed.
    MemoryLeak,
    /// Requests burn CPU in the service itself.
    CpuHotPath,
}

impl Finding {
    /// The phase 3 incident this finding names (`None` for healthy).
    pub fn incident(self) -> Option<&'static str> {
        use phase3_observability::incidents as i;
        match self {
            Finding::Healthy => None,
            Finding::PaymentSlowdown => Some(i::PAYMENT_SLOWDOWN),
            Finding::NotificationBacklog => Some(i::NOTIFICATION_BACKLOG),
            Finding::MemoryLeak => Some(i::MEMORY_LEAK),
            Finding::CpuHotPath => Some(i::CPU_HOT_PATH),
        }
    }
}

/// A finding and the numbers behind it (printed next to the verdict).
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnosis {
    pub finding: Finding,
    pub evidence: String,
}

/// What the learner implements (their copy of `starter.rs`) and the reference
/// implements (`solution.rs`).
pub trait Diagnose: Send + Sync + 'static {
    fn new() -> Self
    where
        Self: Sized;

    /// What is wrong, judged from a scrape `before` and a scrape `after` a stretch
    /// of traffic (a few orders, then a few dozen `GET /orders/{id}`).
    fn diagnose(&self, before: &Samples, after: &Samples) -> Diagnosis;
}

pub const HINTS: &[&str] = &[
    "Compare the two scrapes, never one alone: counters and histograms only mean something \
     as a difference (`after.sum(..) - before.sum(..)`, `after.histogram_since(before, ..)`). \
     Each incident moves a different signal — find which one moved.",
    "Payment slowdown: the window's p99 of `payment_duration_seconds` (exercise 9). \
     Notification backlog: `kafka_consumer_lag` of the notification group in `after` (a \
     gauge: read it directly) — but when the broker is slow every group lags, so back it \
     with the notification consumer's own `event_processing_duration_seconds`.",
    "Memory leak: `process_resident_memory_bytes` grew by well over 100 MiB in a minute of light \
     traffic. CPU hot path: CPU seconds spent per request — the increase of \
     `process_cpu_seconds_total` divided by the increase of `http_requests_total` on the \
     `/orders…` routes.",
    "CPU per request counts everything the process did in the window, idle work included: \
     a window made long by slow payments shows ~18 ms per request with no hot path at all \
     (~5 ms when healthy, 17–30 ms with it: the burn is wall time, so busy cores shrink its CPU \
     share). Back it with latency: a CPU-bound hot path makes \
     `http_request_duration_seconds` of `GET /orders/{id}` slow too (p50 ~2 ms → 25+ ms).",
    "Pick thresholds between healthy and ill with room on both sides (healthy: p99 in ms, lag \
     near 0, RSS ± a few MiB, a few ms of CPU per request). The runbooks in \
     docs/src/phase3/runbooks/ read the same signals; the alerts in \
     phase3-observability/deploy/prometheus/alerts.yml encode them.",
];

pub const EXERCISE: crate::Exercise = crate::Exercise {
    number: 11,
    dir: "ex11_diagnose_incident",
    title: "finding the planned incident from metrics alone",
    readme: include_str!("README.md"),
    hints: HINTS,
    needs: &[
        crate::infra::Service::Postgres,
        crate::infra::Service::Redis,
        crate::infra::Service::Kafka,
    ],
    check_starter: check::check::<starter::OnCall>,
    check_yours: check::check::<yours::OnCall>,
    check_solution: check::check::<solution::OnCall>,
};
