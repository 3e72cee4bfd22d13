//! Planned incidents: real faults, switched on and off at runtime, for a learner to
//! find from the metrics and traces alone.
//!
//! Each is a fault of a kind seen in production, injected *around* the phase 2 code
//! (none of it knows):
//!
//! | incident               | what is wrong                                                        | how it is injected |
//! |------------------------|----------------------------------------------------------------------|--------------------|
//! | `payment-slowdown`     | the payment provider answers slowly                                  | a [`FaultProxy`] between the payment service and the provider adds latency each way |
//! | `notification-backlog` | the notification service's Redis is slow, so it consumes slowly      | a [`FaultProxy`] between the notification service and Redis adds latency each way |
//! | `memory-leak`          | every consumed event leaves bytes behind ("an audit cache that never evicts") | [`LeakLayer`] keeps a buffer per `consume` span |
//! | `cpu-hot-path`         | every order API request does expensive CPU work on the async runtime | [`cpu_hot_path`], an axum middleware |
//!
//! Every switch is logged (`incident switched on`), and shows as
//! `incident_active{incident}` on `/metrics` — so a dashboard, an alert and a test
//! can all see what an instructor did. The switches are served by the ops server
//! ([`crate::ops`]): `GET /admin/incidents`, `PUT` / `DELETE /admin/incidents/{name}`.

use crate::metrics::Metrics;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use phase2_events::fault_proxy::FaultProxy;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Subscriber;
use tracing::span::Id;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The names, as used in URLs, metrics and the CLI.
pub const PAYMENT_SLOWDOWN: &str = "payment-slowdown";
pub const NOTIFICATION_BACKLOG: &str = "notification-backlog";
pub const MEMORY_LEAK: &str = "memory-leak";
pub const CPU_HOT_PATH: &str = "cpu-hot-path";

/// How strong each incident is (flags of the phase 3 binary).
#[derive(Debug, Clone, clap::Args)]
pub struct IncidentSettings {
    /// payment-slowdown: latency added each way between payment service and provider.
    #[arg(long = "incident-payment-latency", env = "INCIDENT_PAYMENT_LATENCY", default_value = "1s", value_parser = humantime::parse_duration)]
    pub payment_latency: Duration,
    /// notification-backlog: latency added each way between notification and Redis.
    #[arg(long = "incident-redis-latency", env = "INCIDENT_REDIS_LATENCY", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub redis_latency: Duration,
    /// memory-leak: bytes kept for every event consumed while it is on.
    #[arg(long = "incident-leak-bytes", env = "INCIDENT_LEAK_BYTES", default_value_t = 256 * 1024)]
    pub leak_bytes_per_event: usize,
    /// cpu-hot-path: CPU time burnt in every order API request while it is on.
    #[arg(long = "incident-cpu-burn", env = "INCIDENT_CPU_BURN", default_value = "25ms", value_parser = humantime::parse_duration)]
    pub cpu_burn: Duration,
}

impl Default for IncidentSettings {
    fn default() -> Self {
        IncidentSettings {
            payment_latency: Duration::from_secs(1),
            redis_latency: Duration::from_millis(200),
            leak_bytes_per_event: 256 * 1024,
            cpu_burn: Duration::from_millis(25),
        }
    }
}

/// One incident's state, as the admin API shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Status {
    pub name: String,
    pub active: bool,
    pub description: String,
    /// When it was last switched on (while active).
    pub since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IncidentLabel {
    incident: String,
}

enum Switch {
    /// Latency on a fault proxy.
    Latency {
        proxy: FaultProxy,
        latency: Duration,
    },
    Flag(Arc<AtomicBool>),
}

struct Entry {
    description: String,
    switch: Switch,
    since: Mutex<Option<DateTime<Utc>>>,
}

/// The incidents this process can stage (only those of the services it runs).
#[derive(Clone)]
pub struct Incidents {
    entries: Arc<BTreeMap<&'static str, Entry>>,
    active: Family<IncidentLabel, Gauge>,
}

impl std::fmt::Debug for Incidents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incidents")
            .field("names", &self.entries.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Collects the incidents while the services are wired, then [`Builder::build`].
#[derive(Default)]
pub struct Builder {
    entries: BTreeMap<&'static str, Entry>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.keys()).finish()
    }
}

impl Builder {
    /// `payment-slowdown`: `proxy` sits between the payment service and the provider.
    pub fn payment_slowdown(&mut self, proxy: FaultProxy, latency: Duration) -> &mut Self {
        self.entries.insert(
            PAYMENT_SLOWDOWN,
            Entry {
                description: format!("the payment provider answers {:?} slower each way", latency),
                switch: Switch::Latency { proxy, latency },
                since: Mutex::new(None),
            },
        );
        self
    }

    /// `notification-backlog`: `proxy` sits between the notification service and Redis.
    pub fn notification_backlog(&mut self, proxy: FaultProxy, latency: Duration) -> &mut Self {
        self.entries.insert(
            NOTIFICATION_BACKLOG,
            Entry {
                description: format!(
                    "Redis answers the notification service {:?} slower each way",
                    latency
                ),
                switch: Switch::Latency { proxy, latency },
                since: Mutex::new(None),
            },
        );
        self
    }

    /// `memory-leak`, through `leak`'s layer.
    pub fn memory_leak(&mut self, leak: &Leak) -> &mut Self {
        self.entries.insert(
            MEMORY_LEAK,
            Entry {
                description: format!(
                    "every consumed event keeps {} KiB alive",
                    leak.bytes_per_event / 1024
                ),
                switch: Switch::Flag(leak.active.clone()),
                since: Mutex::new(None),
            },
        );
        self
    }

    /// `cpu-hot-path`, through `cpu`'s middleware.
    pub fn cpu_hot_path(&mut self, cpu: &CpuBurn) -> &mut Self {
        self.entries.insert(
            CPU_HOT_PATH,
            Entry {
                description: format!(
                    "every order API request burns {:?} of CPU on the async runtime",
                    cpu.burn
                ),
                switch: Switch::Flag(cpu.active.clone()),
                since: Mutex::new(None),
            },
        );
        self
    }

    /// Registers `incident_active` (0 for each, until switched on).
    pub fn build(self, metrics: &Metrics) -> Incidents {
        let active: Family<IncidentLabel, Gauge> = metrics.register(
            "incident_active",
            "1 while a planned incident is switched on",
            Family::default(),
        );
        for name in self.entries.keys() {
            active
                .get_or_create(&IncidentLabel {
                    incident: (*name).to_owned(),
                })
                .set(0);
        }
        Incidents {
            entries: Arc::new(self.entries),
            active,
        }
    }
}

/// Switching an incident that this process does not have.
#[derive(Debug, thiserror::Error)]
#[error("no incident {name:?} here; this process has: {known}")]
pub struct UnknownIncident {
    pub name: String,
    pub known: String,
}

impl Incidents {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Every incident of this process and whether it is on.
    pub fn list(&self) -> Vec<Status> {
        self.entries
            .iter()
            .map(|(name, entry)| {
                let since = *entry.since.lock().unwrap_or_else(|p| p.into_inner());
                Status {
                    name: (*name).to_owned(),
                    active: since.is_some(),
                    description: entry.description.clone(),
                    since,
                }
            })
            .collect()
    }

    /// One incident's state.
    pub fn get(&self, name: &str) -> Result<Status, UnknownIncident> {
        self.list()
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| self.unknown(name))
    }

    fn unknown(&self, name: &str) -> UnknownIncident {
        UnknownIncident {
            name: name.to_owned(),
            known: self.entries.keys().copied().collect::<Vec<_>>().join(", "),
        }
    }

    /// Switches `name` on or off; switching to the state it is in changes nothing.
    pub fn set(&self, name: &str, on: bool) -> Result<Status, UnknownIncident> {
        let Some((name, entry)) = self.entries.get_key_value(name) else {
            return Err(self.unknown(name));
        };
        let mut since = entry.since.lock().unwrap_or_else(|p| p.into_inner());
        if since.is_some() != on {
            match &entry.switch {
                Switch::Latency { proxy, latency } => {
                    proxy
                        .faults()
                        .set_latency(if on { *latency } else { Duration::ZERO })
                }
                Switch::Flag(flag) => flag.store(on, Ordering::SeqCst),
            }
            *since = on.then(Utc::now);
            self.active
                .get_or_create(&IncidentLabel {
                    incident: (*name).to_owned(),
                })
                .set(i64::from(on));
            if on {
                tracing::warn!(incident = *name, description = %entry.description, "incident switched on");
            } else {
                tracing::warn!(incident = *name, "incident switched off");
            }
        }
        Ok(Status {
            name: (*name).to_owned(),
            active: since.is_some(),
            description: entry.description.clone(),
            since: *since,
        })
    }

    /// Switches every incident off (at shutdown, and for tests).
    pub fn clear(&self) {
        for name in self.entries.keys() {
            let _ = self.set(name, false);
        }
    }
}

// ---------------------------------------------------------------------------------
// memory-leak

/// The memory leak: while on, every `consume` span that closes leaves
/// `bytes_per_event` behind in a list nobody reads. Switching it off empties the list
/// (the "fix"); whether the process's RSS then shrinks is up to the allocator.
#[derive(Debug, Clone)]
pub struct Leak {
    active: Arc<AtomicBool>,
    bytes_per_event: usize,
    retained: Arc<Mutex<Vec<Box<[u8]>>>>,
    retained_bytes: Arc<AtomicU64>,
}

impl Leak {
    pub fn new(bytes_per_event: usize) -> Leak {
        Leak {
            active: Arc::default(),
            bytes_per_event,
            retained: Arc::default(),
            retained_bytes: Arc::default(),
        }
    }

    /// The tracing layer that does the leaking (installed with the subscriber).
    pub fn layer(&self) -> LeakLayer {
        LeakLayer(self.clone())
    }

    /// Bytes held right now (for tests; the learner must find it from RSS).
    pub fn retained_bytes(&self) -> u64 {
        self.retained_bytes.load(Ordering::Relaxed)
    }

    fn on_event_consumed(&self) {
        let mut retained = self.retained.lock().unwrap_or_else(|p| p.into_inner());
        if self.active.load(Ordering::Relaxed) {
            // Written, not just allocated: untouched pages would not count in RSS.
            retained.push(vec![0xA5; self.bytes_per_event].into_boxed_slice());
            self.retained_bytes
                .fetch_add(self.bytes_per_event as u64, Ordering::Relaxed);
        } else if !retained.is_empty() {
            retained.clear();
            retained.shrink_to_fit();
            self.retained_bytes.store(0, Ordering::Relaxed);
        }
    }
}

/// See [`Leak`].
#[derive(Debug, Clone)]
pub struct LeakLayer(Leak);

impl<S> tracing_subscriber::Layer<S> for LeakLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if ctx.span(&id).is_some_and(|span| span.name() == "consume") {
            self.0.on_event_consumed();
        }
    }
}

// ---------------------------------------------------------------------------------
// cpu-hot-path

/// The CPU hot path: while on, every request through [`cpu_hot_path`] spins for
/// `burn` computing a hash nobody needs — on the async runtime's thread, the way an
/// expensive check (a password hash, a regex compiled per call, a JSON document
/// re-serialised in a loop) blocks a worker in real code. Two cores, 25 ms each:
/// the API tops out near 80 requests per second, and every other task on that worker
/// waits meanwhile.
#[derive(Debug, Clone)]
pub struct CpuBurn {
    active: Arc<AtomicBool>,
    burn: Duration,
}

impl CpuBurn {
    pub fn new(burn: Duration) -> CpuBurn {
        CpuBurn {
            active: Arc::default(),
            burn,
        }
    }
}

/// The axum middleware of [`CpuBurn`]:
/// `router.layer(axum::middleware::from_fn_with_state(cpu, cpu_hot_path))`.
pub async fn cpu_hot_path(State(cpu): State<CpuBurn>, request: Request, next: Next) -> Response {
    if cpu.active.load(Ordering::Relaxed) {
        std::hint::black_box(spin(cpu.burn));
    }
    next.run(request).await
}

/// Busy work for `burn` of wall time (all of it CPU while this thread runs).
fn spin(burn: Duration) -> u64 {
    let started = Instant::now();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while started.elapsed() < burn {
        for _ in 0..1024 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_shows_in_the_list_and_in_the_gauge_and_unknown_names_are_refused() {
        let metrics = Metrics::new();
        let leak = Leak::new(1024);
        let cpu = CpuBurn::new(Duration::from_millis(1));
        let mut builder = Incidents::builder();
        builder.memory_leak(&leak).cpu_hot_path(&cpu);
        let incidents = builder.build(&metrics);
        assert!(
            metrics
                .encode()
                .contains(r#"incident_active{incident="memory-leak"} 0"#)
        );

        let on = incidents.set(MEMORY_LEAK, true).unwrap();
        assert!(on.active && on.since.is_some());
        assert!(
            metrics
                .encode()
                .contains(r#"incident_active{incident="memory-leak"} 1"#)
        );
        assert!(leak.active.load(Ordering::SeqCst));
        // Idempotent: a second "on" keeps the first time.
        assert_eq!(incidents.set(MEMORY_LEAK, true).unwrap().since, on.since);

        incidents.set(MEMORY_LEAK, false).unwrap();
        assert!(!leak.active.load(Ordering::SeqCst));
        assert!(incidents.list().iter().all(|s| !s.active));

        let err = incidents.set("meteor-strike", true).unwrap_err();
        assert!(
            err.to_string().contains("cpu-hot-path, memory-leak"),
            "{err}"
        );
    }

    #[test]
    fn the_leak_keeps_bytes_per_event_while_on_and_lets_go_when_off() {
        let leak = Leak::new(4096);
        leak.on_event_consumed();
        assert_eq!(leak.retained_bytes(), 0, "off: nothing kept");
        leak.active.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            leak.on_event_consumed();
        }
        assert_eq!(leak.retained_bytes(), 3 * 4096);
        leak.active.store(false, Ordering::SeqCst);
        leak.on_event_consumed();
        assert_eq!(leak.retained_bytes(), 0);
    }
}
