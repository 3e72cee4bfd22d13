//! The dashboard's state, made from snapshots: rates, sliding windows, trends, and
//! the event log. Pure: every timestamp comes in with the snapshot, so a test feeds
//! two synthetic scrapes and gets an exact p99 back.
//!
//! **Rates from counters.** A counter only grows; its rate is
//! `(now − then) / seconds between`, over the last [`ModelConfig::rate_span`]
//! (like PromQL's `rate(x[10s])`). Each process is differenced on its own: when one
//! restarts, its counters start from 0 again, and a counter that went *down* is read
//! as a reset (what PromQL does), not as a negative rate. Processes are summed after.
//!
//! **Percentiles over a window.** Buckets are cumulative since the process started,
//! so p99 of the raw buckets is p99 of the process's whole life — it hardly moves when
//! payments slow down now. Subtracting the buckets of the scrape taken
//! [`ModelConfig::window`] ago leaves only the observations of the window
//! ([`Samples::histogram_since`]); [`quantile`] interpolates in that. The panel
//! shows both, so the difference is visible.
//!
//! **Trends.** Lag is a queue: what matters is whether it grows. The trend compares
//! a group's total lag now with the total one rate span ago.

use crate::poll::{Probe, Snapshot};
use chrono::{DateTime, Utc};
use phase3_observability::incidents::{
    CPU_HOT_PATH, MEMORY_LEAK, NOTIFICATION_BACKLOG, PAYMENT_SLOWDOWN,
};
use phase3_observability::scrape::{Buckets, Samples, quantile};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// The planned incidents and the keys that switch them.
pub const INCIDENT_KEYS: [(char, &str); 4] = [
    ('1', PAYMENT_SLOWDOWN),
    ('2', NOTIFICATION_BACKLOG),
    ('3', MEMORY_LEAK),
    ('4', CPU_HOT_PATH),
];

/// The order statuses with a rate on the orders panel (`orders_total{status}`).
pub const ORDER_STATUSES: [&str; 5] = ["placed", "paid", "confirmed", "delivered", "cancelled"];

/// The histogram of the latency panel.
pub const PAYMENT_HISTOGRAM: &str = "payment_duration_seconds";

/// How the model turns snapshots into numbers.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// The sliding window of the latency percentiles.
    pub window: Duration,
    /// How far back a rate or a trend looks.
    pub rate_span: Duration,
    /// Points kept for each sparkline.
    pub history: usize,
    /// Total lag of a group that, when crossed, goes into the event log.
    pub lag_threshold: f64,
    /// Lines kept in the event log.
    pub log_lines: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            window: Duration::from_secs(30),
            rate_span: Duration::from_secs(10),
            history: 120,
            lag_threshold: 100.0,
            log_lines: 200,
        }
    }
}

/// A fixed-length history for a sparkline: the newest value last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    values: VecDeque<f64>,
    capacity: usize,
}

impl Series {
    pub fn new(capacity: usize) -> Series {
        Series {
            values: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    pub fn push(&mut self, value: f64) {
        if self.values.len() == self.capacity {
            self.values.pop_front();
        }
        self.values.push_back(value);
    }

    pub fn last(&self) -> Option<f64> {
        self.values.back().copied()
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = f64> + ExactSizeIterator + '_ {
        self.values.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Health of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    /// `/health` answers but `/ready` does not say yes.
    NotReady,
    Down,
}

impl Health {
    pub fn label(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::NotReady => "not ready",
            Health::Down => "down",
        }
    }
}

/// The health panel's row of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub url: String,
    pub health: Health,
    /// Why it is not up ("connection refused", "ready: 503").
    pub reason: Option<String>,
    /// When it entered this state.
    pub since: DateTime<Utc>,
    /// `process_resident_memory_bytes`, for targets that export it.
    pub rss_bytes: Option<f64>,
    /// CPU cores in use: the rate of `process_cpu_seconds_total`.
    pub cpu_cores: Option<f64>,
}

/// p50/p95/p99 of a set of buckets, and how many observations they hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub count: f64,
}

impl Percentiles {
    /// `None` without observations.
    pub fn of(buckets: &[(f64, f64)]) -> Option<Percentiles> {
        Some(Percentiles {
            p50: quantile(0.5, buckets)?,
            p95: quantile(0.95, buckets)?,
            p99: quantile(0.99, buckets)?,
            count: buckets.last()?.1,
        })
    }
}

/// Direction of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trend {
    Up,
    Down,
    Flat,
}

impl Trend {
    pub fn arrow(self) -> &'static str {
        match self {
            Trend::Up => "↑",
            Trend::Down => "↓",
            Trend::Flat => "→",
        }
    }
}

/// One partition's lag.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: String,
    pub lag: f64,
}

/// One consumer group: its partitions, total, trend and history.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupLag {
    pub partitions: Vec<PartitionLag>,
    pub total: f64,
    pub trend: Trend,
    pub history: Series,
    /// Above the threshold (to log only the crossings).
    pub above: bool,
}

/// One outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbox {
    pub database: String,
    pub backlog: f64,
    pub oldest_age_seconds: Option<f64>,
}

/// `circuit_breaker_state`: 0 closed, 1 half-open, 2 open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    Closed,
    HalfOpen,
    Open,
}

impl Breaker {
    fn from_gauge(value: f64) -> Breaker {
        match value as i64 {
            0 => Breaker::Closed,
            1 => Breaker::HalfOpen,
            _ => Breaker::Open,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Breaker::Closed => "closed",
            Breaker::HalfOpen => "half-open",
            Breaker::Open => "open",
        }
    }
}

/// What phase 4's gateway did, per second, from its `/metrics` (`None` on the model
/// before phase 4: no target exports `gateway_in_flight`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayView {
    /// Every request that reached the gateway.
    pub offered: Option<f64>,
    /// Forwarded to an order API replica.
    pub admitted: Option<f64>,
    pub unauthorized: Option<f64>,
    pub rate_limited: Option<f64>,
    /// 503 without forwarding: too many in flight, or the pipeline behind.
    pub shed: Option<f64>,
    pub in_flight: Option<f64>,
    /// `false` while admission control sheds new orders.
    pub admitting_orders: Option<bool>,
    /// Orders admission control lets be under way at once (Little's law).
    pub order_limit: Option<f64>,
    /// Each replica: in the rotation, and its breaker.
    pub upstreams: Vec<(String, bool, Breaker)>,
}

/// Phase 4's supervisor and a chaos scenario, when they are watched: each process
/// (running, restarts), the faults being injected, and the scenario's live counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChaosView {
    /// (process, running, restarts), by name.
    pub processes: Vec<(String, bool, f64)>,
    /// The faults being injected right now.
    pub faults: Vec<String>,
    /// Orders of the run: accepted, final, under way.
    pub accepted: Option<f64>,
    pub final_orders: Option<f64>,
    pub in_flight: Option<f64>,
    /// Messages published and not yet finished, over the run's consumer groups.
    pub lag: Option<f64>,
}

/// One planned incident, and the target that has it (where its key sends the switch).
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub name: String,
    pub target: String,
    pub active: bool,
    pub since: Option<DateTime<Utc>>,
    pub description: String,
}

/// How an event-log line is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    /// Something recovered.
    Good,
    /// Something went wrong.
    Bad,
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub at: DateTime<Utc>,
    pub level: Level,
    pub text: String,
}

/// Error and dead-letter rates, per second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Errors {
    /// HTTP responses with a 5xx status.
    pub http_5xx: Option<f64>,
    /// HTTP responses of any status (to put the 5xx in proportion).
    pub http_all: Option<f64>,
    /// `events_failed_total`.
    pub events_failed: Option<f64>,
    /// `dlq_messages_total`: messages sent to a dead-letter topic.
    pub dlq: Option<f64>,
    /// `dlq_depth` summed: dead letters not yet replayed.
    pub dlq_depth: Option<f64>,
    pub history_5xx: Series,
    pub history_dlq: Series,
}

#[derive(Debug, Clone)]
struct Scrape {
    at: DateTime<Utc>,
    /// `(target, its /metrics)` for every target that served them.
    targets: Vec<(String, Arc<Samples>)>,
}

/// Everything on screen.
#[derive(Debug, Clone)]
pub struct Model {
    pub config: ModelConfig,
    /// The time of the latest snapshot.
    pub now: Option<DateTime<Utc>>,
    pub services: Vec<Service>,
    /// Orders per second by status.
    pub orders: BTreeMap<&'static str, Option<f64>>,
    pub orders_history: Series,
    /// Payment latency over [`ModelConfig::window`].
    pub latency_window: Option<Percentiles>,
    /// … and since the processes started.
    pub latency_lifetime: Option<Percentiles>,
    /// Seconds the window actually covers (less than `window` right after start).
    pub window_covered: Option<f64>,
    pub p99_history: Series,
    pub errors: Errors,
    pub lag: BTreeMap<String, GroupLag>,
    pub outboxes: Vec<Outbox>,
    pub breakers: BTreeMap<String, Breaker>,
    pub gateway: Option<GatewayView>,
    pub chaos: Option<ChaosView>,
    pub incidents: Vec<Incident>,
    pub log: VecDeque<LogEntry>,
    scrapes: VecDeque<Scrape>,
    snapshots: u64,
}

impl Model {
    pub fn new(config: ModelConfig) -> Model {
        Model {
            orders: ORDER_STATUSES.iter().map(|s| (*s, None)).collect(),
            orders_history: Series::new(config.history),
            p99_history: Series::new(config.history),
            errors: Errors {
                history_5xx: Series::new(config.history),
                history_dlq: Series::new(config.history),
                ..Errors::default()
            },
            config,
            now: None,
            services: Vec::new(),
            latency_window: None,
            latency_lifetime: None,
            window_covered: None,
            lag: BTreeMap::new(),
            outboxes: Vec::new(),
            breakers: BTreeMap::new(),
            gateway: None,
            chaos: None,
            incidents: Vec::new(),
            log: VecDeque::new(),
            scrapes: VecDeque::new(),
            snapshots: 0,
        }
    }

    /// How many snapshots were applied.
    pub fn snapshots(&self) -> u64 {
        self.snapshots
    }

    /// Adds a line to the event log (also used by the app: "switching …").
    pub fn note(&mut self, at: DateTime<Utc>, level: Level, text: impl Into<String>) {
        if self.log.len() == self.config.log_lines {
            self.log.pop_front();
        }
        self.log.push_back(LogEntry {
            at,
            level,
            text: text.into(),
        });
    }

    /// The target an incident's switch goes to.
    pub fn incident(&self, name: &str) -> Option<&Incident> {
        self.incidents.iter().find(|i| i.name == name)
    }

    /// Folds one snapshot in.
    pub fn apply(&mut self, snapshot: &Snapshot) {
        let at = snapshot.at;
        self.now = Some(at);
        self.snapshots += 1;
        self.apply_health(snapshot);

        let scrape = Scrape {
            at,
            targets: snapshot
                .targets
                .iter()
                .filter_map(|t| t.metrics.clone().map(|m| (t.name.clone(), m)))
                .collect(),
        };
        self.scrapes.push_back(scrape);
        let window =
            chrono::Duration::from_std(self.config.window).unwrap_or(chrono::Duration::MAX);
        while self.scrapes.front().is_some_and(|s| s.at < at - window) {
            self.scrapes.pop_front();
        }
        let rate_span =
            chrono::Duration::from_std(self.config.rate_span).unwrap_or(chrono::Duration::MAX);
        let current = self.scrapes.back().expect("just pushed").clone();
        // The oldest scrape within reach, but never the current one itself.
        let base_for = |span: chrono::Duration| {
            self.scrapes
                .iter()
                .take(self.scrapes.len() - 1)
                .find(|s| s.at >= at - span)
                .cloned()
        };
        let rate_base = base_for(rate_span);
        let window_base = base_for(window);

        self.apply_rates(&current, rate_base.as_ref());
        self.apply_latency(&current, window_base.as_ref());
        self.apply_lag(&current, rate_base.as_ref());
        self.apply_gauges(&current, at);
        self.apply_process(&current, rate_base.as_ref());
        self.apply_gateway(&current, rate_base.as_ref(), at);
        self.apply_chaos(&current, at);
        self.apply_incidents(snapshot);
    }

    fn apply_health(&mut self, snapshot: &Snapshot) {
        let at = snapshot.at;
        let mut services = Vec::new();
        for poll in &snapshot.targets {
            let (health, reason) = match (&poll.health, &poll.ready) {
                (Probe::Failed(why), _) => (Health::Down, Some(why.clone())),
                (Probe::Status(code), _) => (Health::Down, Some(format!("health: {code}"))),
                (_, Probe::Status(code)) => (Health::NotReady, Some(format!("ready: {code}"))),
                (_, Probe::Failed(why)) => (Health::NotReady, Some(format!("ready: {why}"))),
                _ => (Health::Up, None),
            };
            let previous = self.services.iter().find(|s| s.name == poll.name);
            let since = match previous {
                Some(p) if p.health == health => p.since,
                _ => at,
            };
            let changed = previous.map(|p| p.health) != Some(health);
            if changed && (previous.is_some() || health != Health::Up) {
                let why = reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                let level = if health == Health::Up {
                    Level::Good
                } else {
                    Level::Bad
                };
                let verb = match health {
                    Health::Up => "is up again",
                    Health::NotReady => "is not ready",
                    Health::Down => "went down",
                };
                let verb = if previous.is_none() && health == Health::Down {
                    "is down"
                } else {
                    verb
                };
                self.note(at, level, format!("{} {verb}{why}", poll.name));
            }
            services.push(Service {
                name: poll.name.clone(),
                url: poll.url.clone(),
                health,
                reason,
                since,
                rss_bytes: None,
                cpu_cores: None,
            });
        }
        self.services = services;
    }

    fn apply_rates(&mut self, current: &Scrape, base: Option<&Scrape>) {
        let rate = |f: &dyn Fn(&Samples) -> Option<f64>| base.and_then(|b| rate(b, current, f));
        for (status, value) in self.orders.iter_mut() {
            *value = rate(&|s: &Samples| s.sum("orders_total", &[("status", status)]));
        }
        self.orders_history
            .push(self.orders["placed"].unwrap_or(0.0));
        self.errors.http_5xx = rate(&|s: &Samples| {
            sum_where(s, "http_requests_total", |l| {
                served(l) && l.get("status").is_some_and(|c| c.starts_with('5'))
            })
        });
        self.errors.http_all = rate(&|s: &Samples| sum_where(s, "http_requests_total", served));
        self.errors.events_failed = rate(&|s: &Samples| s.sum("events_failed_total", &[]));
        self.errors.dlq = rate(&|s: &Samples| s.sum("dlq_messages_total", &[]));
        self.errors
            .history_5xx
            .push(self.errors.http_5xx.unwrap_or(0.0));
        self.errors.history_dlq.push(self.errors.dlq.unwrap_or(0.0));
    }

    fn apply_latency(&mut self, current: &Scrape, base: Option<&Scrape>) {
        let lifetime = merge(
            current
                .targets
                .iter()
                .map(|(_, s)| s.histogram(PAYMENT_HISTOGRAM, &[])),
        );
        self.latency_lifetime = Percentiles::of(&lifetime);
        self.latency_window = base.and_then(|b| Percentiles::of(&window_buckets(b, current)));
        self.window_covered = base.map(|b| seconds(current.at - b.at));
        self.p99_history
            .push(self.latency_window.map_or(0.0, |p| p.p99));
    }

    fn apply_lag(&mut self, current: &Scrape, base: Option<&Scrape>) {
        let now = lag_by_group(current);
        let then = base.map(lag_by_group).unwrap_or_default();
        let threshold = self.config.lag_threshold;
        let history = self.config.history;
        let at = current.at;
        let mut crossings = Vec::new();
        self.lag.retain(|group, _| now.contains_key(group));
        for (group, partitions) in now {
            let total = partitions.iter().fold(0.0, |sum, p| sum + p.lag);
            let trend = match then.get(&group) {
                Some(before) => {
                    let before = before.iter().fold(0.0, |sum, p| sum + p.lag);
                    if total > before {
                        Trend::Up
                    } else if total < before {
                        Trend::Down
                    } else {
                        Trend::Flat
                    }
                }
                None => Trend::Flat,
            };
            let entry = self.lag.entry(group.clone()).or_insert_with(|| GroupLag {
                partitions: Vec::new(),
                total: 0.0,
                trend: Trend::Flat,
                history: Series::new(history),
                above: false,
            });
            entry.partitions = partitions;
            entry.total = total;
            entry.trend = trend;
            entry.history.push(total);
            let above = total > threshold;
            if above != entry.above {
                entry.above = above;
                crossings.push(if above {
                    (
                        Level::Bad,
                        format!("lag of {group} crossed {threshold}: {total} messages behind"),
                    )
                } else {
                    (
                        Level::Good,
                        format!("lag of {group} back under {threshold}: {total}"),
                    )
                });
            }
        }
        for (level, text) in crossings {
            self.note(at, level, text);
        }
    }

    fn apply_gauges(&mut self, current: &Scrape, at: DateTime<Utc>) {
        let mut outboxes: BTreeMap<String, Outbox> = BTreeMap::new();
        let mut breakers = BTreeMap::new();
        let mut dlq_depth = None;
        for (_, samples) in &current.targets {
            for s in samples.matching("outbox_backlog", &[]) {
                let database = s.labels.get("database").cloned().unwrap_or_default();
                outboxes
                    .entry(database.clone())
                    .or_insert(Outbox {
                        database,
                        backlog: 0.0,
                        oldest_age_seconds: None,
                    })
                    .backlog += s.value;
            }
            for s in samples.matching("outbox_oldest_age_seconds", &[]) {
                let database = s.labels.get("database").cloned().unwrap_or_default();
                let entry = outboxes.entry(database.clone()).or_insert(Outbox {
                    database,
                    backlog: 0.0,
                    oldest_age_seconds: None,
                });
                entry.oldest_age_seconds =
                    Some(entry.oldest_age_seconds.unwrap_or(0.0).max(s.value));
            }
            for s in samples.matching("circuit_breaker_state", &[]) {
                let name = s.labels.get("name").cloned().unwrap_or_default();
                breakers.insert(name, Breaker::from_gauge(s.value));
            }
            if let Some(depth) = samples.sum("dlq_depth", &[]) {
                dlq_depth = Some(dlq_depth.unwrap_or(0.0) + depth);
            }
        }
        for (name, state) in &breakers {
            let before = self.breakers.get(name);
            if before != Some(state) && (before.is_some() || *state != Breaker::Closed) {
                let level = if *state == Breaker::Closed {
                    Level::Good
                } else {
                    Level::Bad
                };
                self.note(at, level, format!("breaker {name} is {}", state.label()));
            }
        }
        self.outboxes = outboxes.into_values().collect();
        self.breakers = breakers;
        self.errors.dlq_depth = dlq_depth;
    }

    fn apply_gateway(&mut self, current: &Scrape, base: Option<&Scrape>, at: DateTime<Utc>) {
        let exported = current
            .targets
            .iter()
            .any(|(_, s)| s.sum("gateway_in_flight", &[]).is_some());
        if !exported {
            self.gateway = None;
            return;
        }
        let rate = |f: &dyn Fn(&Samples) -> Option<f64>| base.and_then(|b| rate(b, current, f));
        let outcome = |name: &'static str| {
            rate(&move |s: &Samples| s.sum(GATEWAY_REQUESTS, &[("outcome", name)]))
        };
        let gauge = |name: &str| {
            current
                .targets
                .iter()
                .filter_map(|(_, s)| s.sum(name, &[]))
                .reduce(|a, b| a + b)
        };
        let mut upstreams = Vec::new();
        for (_, samples) in &current.targets {
            for s in samples.matching("gateway_upstream_up", &[]) {
                let upstream = s.labels.get("upstream").cloned().unwrap_or_default();
                let breaker = samples
                    .sum("gateway_upstream_breaker_state", &[("upstream", &upstream)])
                    .map_or(Breaker::Closed, Breaker::from_gauge);
                upstreams.push((upstream, s.value >= 1.0, breaker));
            }
        }
        upstreams.sort_by(|a, b| a.0.cmp(&b.0));
        let view = GatewayView {
            offered: rate(&|s: &Samples| s.sum(GATEWAY_REQUESTS, &[])),
            admitted: outcome("forwarded"),
            unauthorized: outcome("unauthorized"),
            rate_limited: outcome("rate_limited"),
            shed: outcome("shed"),
            in_flight: gauge("gateway_in_flight"),
            admitting_orders: gauge("gateway_admitting_orders").map(|v| v >= 1.0),
            order_limit: gauge("gateway_order_limit"),
            upstreams,
        };
        let before = self.gateway.as_ref().and_then(|g| g.admitting_orders);
        if let (Some(was), Some(now)) = (before, view.admitting_orders)
            && was != now
        {
            if now {
                self.note(at, Level::Good, "gateway: admitting new orders again");
            } else {
                self.note(
                    at,
                    Level::Bad,
                    "gateway: the pipeline is full; shedding new orders",
                );
            }
        }
        let was_up: BTreeMap<String, bool> = self
            .gateway
            .as_ref()
            .map(|g| {
                g.upstreams
                    .iter()
                    .map(|(u, up, _)| (u.clone(), *up))
                    .collect()
            })
            .unwrap_or_default();
        for (upstream, up, _) in &view.upstreams {
            if was_up.get(upstream).is_some_and(|was| was != up) {
                let (level, text) = if *up {
                    (
                        Level::Good,
                        format!("gateway: {upstream} back in the rotation"),
                    )
                } else {
                    (
                        Level::Bad,
                        format!("gateway: {upstream} taken out of the rotation"),
                    )
                };
                self.note(at, level, text);
            }
        }
        self.gateway = Some(view);
    }

    fn apply_chaos(&mut self, current: &Scrape, at: DateTime<Utc>) {
        let mut view = ChaosView::default();
        let mut seen = false;
        for (_, samples) in &current.targets {
            for s in samples.matching("supervisor_up", &[]) {
                seen = true;
                let process = s.labels.get("process").cloned().unwrap_or_default();
                let restarts = samples
                    .sum("supervisor_restarts_total", &[("process", &process)])
                    .unwrap_or(0.0);
                view.processes.push((process, s.value >= 1.0, restarts));
            }
            for s in samples.matching("chaos_fault_active", &[]) {
                seen = true;
                if s.value >= 1.0 {
                    view.faults
                        .push(s.labels.get("fault").cloned().unwrap_or_default());
                }
            }
            for (name, slot) in [
                ("chaos_orders_accepted", &mut view.accepted),
                ("chaos_orders_final", &mut view.final_orders),
                ("chaos_orders_in_flight", &mut view.in_flight),
                ("chaos_consumer_lag", &mut view.lag),
            ] {
                if let Some(v) = samples.sum(name, &[]) {
                    seen = true;
                    *slot = Some(v);
                }
            }
        }
        if !seen {
            self.chaos = None;
            return;
        }
        view.processes.sort_by(|a, b| a.0.cmp(&b.0));
        view.faults.sort();
        let before = self.chaos.take().unwrap_or_default();
        for (process, up, restarts) in &view.processes {
            let was = before.processes.iter().find(|(p, ..)| p == process);
            if let Some((_, was_up, was_restarts)) = was {
                if *was_up && !up {
                    self.note(at, Level::Bad, format!("supervisor: {process} is down"));
                }
                if restarts > was_restarts {
                    self.note(
                        at,
                        Level::Good,
                        format!("supervisor: {process} died and was started again ({restarts:.0} restarts)"),
                    );
                }
            }
        }
        for fault in &view.faults {
            if !before.faults.contains(fault) {
                self.note(at, Level::Bad, format!("chaos: {fault}"));
            }
        }
        for fault in &before.faults {
            if !view.faults.contains(fault) {
                self.note(at, Level::Good, format!("chaos: {fault} — over"));
            }
        }
        self.chaos = Some(view);
    }

    fn apply_process(&mut self, current: &Scrape, base: Option<&Scrape>) {
        for service in &mut self.services {
            let Some((_, samples)) = current.targets.iter().find(|(n, _)| *n == service.name)
            else {
                continue;
            };
            service.rss_bytes = samples.sum("process_resident_memory_bytes", &[]);
            service.cpu_cores = base.and_then(|b| {
                let one = |s: &Scrape| Scrape {
                    at: s.at,
                    targets: s
                        .targets
                        .iter()
                        .filter(|(n, _)| *n == service.name)
                        .cloned()
                        .collect(),
                };
                rate(&one(b), &one(current), &|s: &Samples| {
                    s.sum("process_cpu_seconds_total", &[])
                })
            });
        }
    }

    fn apply_incidents(&mut self, snapshot: &Snapshot) {
        let at = snapshot.at;
        let mut incidents = Vec::new();
        for poll in &snapshot.targets {
            for status in poll.incidents.iter().flatten() {
                incidents.push(Incident {
                    name: status.name.clone(),
                    target: poll.name.clone(),
                    active: status.active,
                    since: status.since,
                    description: status.description.clone(),
                });
            }
        }
        // The planned four in key order, then any others by name.
        let rank = |name: &str| {
            INCIDENT_KEYS
                .iter()
                .position(|(_, n)| *n == name)
                .unwrap_or(INCIDENT_KEYS.len())
        };
        incidents.sort_by(|a, b| {
            (rank(&a.name), &a.name, &a.target).cmp(&(rank(&b.name), &b.name, &b.target))
        });
        // A target that stopped answering keeps its last known incidents, marked by
        // the health panel; switching them then fails with a message.
        for old in &self.incidents {
            let still_there = incidents
                .iter()
                .any(|i| i.name == old.name && i.target == old.target);
            let answered = snapshot
                .targets
                .iter()
                .any(|t| t.name == old.target && t.incidents.is_some());
            if !still_there && !answered {
                incidents.push(old.clone());
            }
        }
        let mut notes = Vec::new();
        for incident in &incidents {
            let before = self
                .incidents
                .iter()
                .find(|i| i.name == incident.name && i.target == incident.target);
            match before {
                Some(b) if b.active == incident.active => {}
                None if !incident.active => {}
                // Already on when the dashboard first saw it.
                None => {
                    let since = incident.since.map_or(String::new(), |t| {
                        format!(" since {}", t.format("%H:%M:%S"))
                    });
                    notes.push((
                        Level::Bad,
                        format!(
                            "incident {} is on{since} ({})",
                            incident.name, incident.target
                        ),
                    ));
                }
                _ => {
                    let (level, text) = if incident.active {
                        (
                            Level::Bad,
                            format!("incident {} switched on", incident.name),
                        )
                    } else {
                        (
                            Level::Good,
                            format!("incident {} switched off", incident.name),
                        )
                    };
                    notes.push((level, format!("{text} ({})", incident.target)));
                }
            }
        }
        self.incidents = incidents;
        for (level, text) in notes {
            self.note(at, level, text);
        }
    }
}

/// Phase 4's gateway counts every request it decided about here (`route`, `outcome`).
const GATEWAY_REQUESTS: &str = "gateway_requests_total";

fn seconds(d: chrono::Duration) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

/// A request of a client, not of a prober: the dashboard's own polls (and
/// Prometheus's) would otherwise be most of the traffic on a quiet system.
fn served(labels: &BTreeMap<String, String>) -> bool {
    !labels.get("route").is_some_and(|r| {
        matches!(r.as_str(), "/metrics" | "/health" | "/ready") || r.starts_with("/admin/")
    })
}

/// The sum of `name` over the samples whose labels pass `keep`; `None` if `name` is
/// not exported at all.
pub fn sum_where(
    samples: &Samples,
    name: &str,
    keep: impl Fn(&BTreeMap<String, String>) -> bool,
) -> Option<f64> {
    let mut found = false;
    let mut total = 0.0;
    for s in samples.matching(name, &[]) {
        found = true;
        if keep(&s.labels) {
            total += s.value;
        }
    }
    found.then_some(total)
}

/// Per second between two scrapes of a counter read by `value`: each target on its
/// own (a counter that went down was reset: its whole value is new), then summed.
/// `None` when no target has it in both scrapes.
fn rate(base: &Scrape, current: &Scrape, value: &dyn Fn(&Samples) -> Option<f64>) -> Option<f64> {
    let dt = seconds(current.at - base.at);
    if dt <= 0.0 {
        return None;
    }
    let mut total = None;
    for (name, now) in &current.targets {
        let Some(then) = base.targets.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let (Some(now), Some(then)) = (value(now), value(&then.1)) else {
            continue;
        };
        let delta = if now >= then { now - then } else { now };
        total = Some(total.unwrap_or(0.0) + delta);
    }
    total.map(|t| t / dt)
}

/// Sums bucket lists by bound (`sum by (le)` across processes).
fn merge(lists: impl Iterator<Item = Buckets>) -> Buckets {
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for list in lists {
        for (le, count) in list {
            by_le.entry(le.to_bits()).or_insert((le, 0.0)).1 += count;
        }
    }
    by_le.into_values().collect()
}

/// The payment buckets observed between `base` and `current`, summed over targets.
/// A target that restarted in between counts from 0.
fn window_buckets(base: &Scrape, current: &Scrape) -> Buckets {
    merge(current.targets.iter().map(|(name, now)| {
        match base.targets.iter().find(|(n, _)| n == name) {
            Some((_, then)) => {
                let restarted = now.sum(&format!("{PAYMENT_HISTOGRAM}_count"), &[])
                    < then.sum(&format!("{PAYMENT_HISTOGRAM}_count"), &[]);
                if restarted {
                    now.histogram(PAYMENT_HISTOGRAM, &[])
                } else {
                    now.histogram_since(then, PAYMENT_HISTOGRAM, &[])
                }
            }
            None => Vec::new(),
        }
    }))
}

fn lag_by_group(scrape: &Scrape) -> BTreeMap<String, Vec<PartitionLag>> {
    let mut groups: BTreeMap<String, Vec<PartitionLag>> = BTreeMap::new();
    for (_, samples) in &scrape.targets {
        for s in samples.matching("kafka_consumer_lag", &[]) {
            let label = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            groups
                .entry(label("group"))
                .or_default()
                .push(PartitionLag {
                    topic: label("topic"),
                    partition: label("partition"),
                    lag: s.value,
                });
        }
    }
    for partitions in groups.values_mut() {
        partitions.sort_by(|a, b| {
            (
                &a.topic,
                a.partition.parse::<u32>().unwrap_or(u32::MAX),
                &a.partition,
            )
                .cmp(&(
                    &b.topic,
                    b.partition.parse::<u32>().unwrap_or(u32::MAX),
                    &b.partition,
                ))
        });
    }
    groups
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::poll::TargetPoll;
    use chrono::TimeZone;
    use phase3_observability::incidents::Status;
    use phase3_observability::scrape::parse;

    pub fn t(seconds: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap() + chrono::Duration::seconds(seconds)
    }

    pub fn up(name: &str, metrics: &str) -> TargetPoll {
        TargetPoll {
            name: name.into(),
            url: format!("http://{name}"),
            health: Probe::Ok,
            ready: Probe::Ok,
            metrics: Some(Arc::new(parse(metrics))),
            incidents: None,
        }
    }

    pub fn down(name: &str) -> TargetPoll {
        TargetPoll {
            name: name.into(),
            url: format!("http://{name}"),
            health: Probe::Failed("connection refused".into()),
            ready: Probe::Failed("connection refused".into()),
            metrics: None,
            incidents: None,
        }
    }

    pub fn snap(at: i64, targets: Vec<TargetPoll>) -> Snapshot {
        Snapshot { at: t(at), targets }
    }

    fn payment(buckets: &[(&str, u64)]) -> String {
        let mut text = String::new();
        for (le, n) in buckets {
            text += &format!(
                "payment_duration_seconds_bucket{{le=\"{le}\",outcome=\"captured\"}} {n}\n"
            );
        }
        let total = buckets.last().unwrap().1;
        text += &format!("payment_duration_seconds_count{{outcome=\"captured\"}} {total}\n");
        text
    }

    #[test]
    fn p99_over_the_window_comes_from_the_difference_of_two_scrapes() {
        let mut model = Model::new(ModelConfig::default());
        // 1000 fast payments before the window…
        model.apply(&snap(
            0,
            vec![up(
                "all",
                &payment(&[("0.1", 1000), ("1", 1000), ("5", 1000), ("+Inf", 1000)]),
            )],
        ));
        assert_eq!(model.latency_window, None, "one scrape is no window");
        // …then 100 in the window: 90 ≤ 0.1 s, 10 in (1, 5].
        model.apply(&snap(
            20,
            vec![up(
                "all",
                &payment(&[("0.1", 1090), ("1", 1090), ("5", 1100), ("+Inf", 1100)]),
            )],
        ));
        let w = model.latency_window.unwrap();
        assert_eq!(w.count, 100.0);
        // rank 99 of 100: 9th of the 10 in (1, 5] → 1 + 4 × 9/10 = 4.6 s.
        assert!((w.p99 - 4.6).abs() < 1e-9, "{w:?}");
        // rank 50: inside (0, 0.1] holding 90 → 0.1 × 50/90.
        assert!((w.p50 - 0.1 * 50.0 / 90.0).abs() < 1e-9, "{w:?}");
        // The lifetime p99 hardly notices: rank 1089 of 1100 is still ≤ 0.1 s.
        let life = model.latency_lifetime.unwrap();
        assert!(life.p99 <= 0.1, "{life:?}");
        assert_eq!(model.window_covered, Some(20.0));
    }

    fn gateway_metrics(forwarded: u64, shed: u64, admitting: u8, b_up: u8) -> String {
        format!(
            "gateway_requests_total{{route=\"/orders\",outcome=\"forwarded\"}} {forwarded}\n\
             gateway_requests_total{{route=\"/orders\",outcome=\"shed\"}} {shed}\n\
             gateway_requests_total{{route=\"/orders\",outcome=\"rate_limited\"}} 0\n\
             gateway_in_flight 3\n\
             gateway_admitting_orders {admitting}\n\
             gateway_order_limit 64\n\
             gateway_upstream_up{{upstream=\"http://a\"}} 1\n\
             gateway_upstream_up{{upstream=\"http://b\"}} {b_up}\n\
             gateway_upstream_breaker_state{{upstream=\"http://a\"}} 0\n\
             gateway_upstream_breaker_state{{upstream=\"http://b\"}} 2\n"
        )
    }

    #[test]
    fn the_gateway_panel_shows_rates_shedding_and_replicas_and_logs_changes() {
        let mut model = Model::new(ModelConfig::default());
        model.apply(&snap(
            0,
            vec![up("all", "orders_total{status=\"placed\"} 1\n")],
        ));
        assert_eq!(model.gateway, None, "no gateway before phase 4");
        let mut model = Model::new(ModelConfig::default());
        model.apply(&snap(
            1,
            vec![up("gateway", &gateway_metrics(100, 0, 1, 1))],
        ));
        model.apply(&snap(
            3,
            vec![up("gateway", &gateway_metrics(300, 100, 0, 0))],
        ));
        let g = model.gateway.clone().unwrap();
        assert_eq!(g.admitted, Some(100.0), "200 forwarded in 2 s");
        assert_eq!(g.shed, Some(50.0));
        assert_eq!(g.offered, Some(150.0));
        assert_eq!(g.rate_limited, Some(0.0));
        assert_eq!(g.in_flight, Some(3.0));
        assert_eq!(g.admitting_orders, Some(false));
        assert_eq!(g.order_limit, Some(64.0));
        assert_eq!(
            g.upstreams,
            [
                ("http://a".to_owned(), true, Breaker::Closed),
                ("http://b".to_owned(), false, Breaker::Open)
            ]
        );
        let log: Vec<&str> = model.log.iter().map(|e| e.text.as_str()).collect();
        assert!(
            log.contains(&"gateway: the pipeline is full; shedding new orders"),
            "{log:?}"
        );
        assert!(
            log.contains(&"gateway: http://b taken out of the rotation"),
            "{log:?}"
        );
    }

    #[test]
    fn the_chaos_panel_shows_faults_orders_and_restarts_and_logs_them() {
        let supervisor = |payment_up: u8, restarts: u8| {
            format!(
                "supervisor_up{{process=\"payment\"}} {payment_up}\n\
                 supervisor_up{{process=\"relay\"}} 1\n\
                 supervisor_restarts_total{{process=\"payment\"}} {restarts}\n"
            )
        };
        let chaos = |active: u8| {
            format!(
                "chaos_fault_active{{fault=\"SIGKILL payment\"}} {active}\n\
                 chaos_orders_accepted 120\nchaos_orders_final 100\nchaos_orders_in_flight 20\n\
                 chaos_consumer_lag 42\n"
            )
        };
        let mut model = Model::new(ModelConfig::default());
        model.apply(&snap(
            0,
            vec![up("supervisor", &supervisor(1, 0)), up("chaos", &chaos(0))],
        ));
        model.apply(&snap(
            1,
            vec![up("supervisor", &supervisor(0, 0)), up("chaos", &chaos(1))],
        ));
        let c = model.chaos.clone().unwrap();
        assert_eq!(c.faults, ["SIGKILL payment"]);
        assert_eq!(c.in_flight, Some(20.0));
        assert_eq!(c.lag, Some(42.0));
        assert_eq!(
            c.processes,
            [
                ("payment".to_owned(), false, 0.0),
                ("relay".to_owned(), true, 0.0)
            ]
        );
        model.apply(&snap(
            2,
            vec![up("supervisor", &supervisor(1, 1)), up("chaos", &chaos(0))],
        ));
        let log: Vec<&str> = model.log.iter().map(|e| e.text.as_str()).collect();
        for line in [
            "chaos: SIGKILL payment",
            "supervisor: payment is down",
            "supervisor: payment died and was started again (1 restarts)",
            "chaos: SIGKILL payment — over",
        ] {
            assert!(log.contains(&line), "{line}: {log:?}");
        }
    }

    #[test]
    fn the_window_slides_scrapes_older_than_it_drop_out() {
        let config = ModelConfig {
            window: Duration::from_secs(30),
            ..ModelConfig::default()
        };
        let mut model = Model::new(config);
        let h = |slow: u64| payment(&[("0.1", 100), ("5", 100 + slow), ("+Inf", 100 + slow)]);
        model.apply(&snap(0, vec![up("all", &h(0))]));
        model.apply(&snap(10, vec![up("all", &h(50))])); // 50 slow ones
        model.apply(&snap(20, vec![up("all", &h(50))]));
        assert_eq!(model.latency_window.unwrap().count, 50.0);
        model.apply(&snap(45, vec![up("all", &h(50))])); // nothing new since 10 s
        // The window (15 s…45 s) starts at the scrape of 20 s: no payments in it.
        assert_eq!(model.latency_window, None);
        assert_eq!(model.window_covered, Some(25.0));
        model.apply(&snap(50, vec![up("all", &h(60))]));
        let w = model.latency_window.unwrap();
        assert_eq!(w.count, 10.0, "only the 10 since the scrape at 20 s");
        assert!(w.p50 > 0.1, "all of them slow: {w:?}");
    }

    #[test]
    fn rates_are_per_second_and_a_restart_is_not_a_negative_rate() {
        let mut model = Model::new(ModelConfig::default());
        let orders = |placed: u64, paid: u64| {
            format!(
                "orders_total{{status=\"placed\"}} {placed}\norders_total{{status=\"paid\"}} {paid}\n"
            )
        };
        model.apply(&snap(
            0,
            vec![up("order", &orders(100, 90)), up("payment", "")],
        ));
        model.apply(&snap(5, vec![up("order", &orders(150, 100))]));
        assert_eq!(model.orders["placed"], Some(10.0));
        assert_eq!(model.orders["paid"], Some(2.0));
        assert_eq!(model.orders["delivered"], None, "never exported");
        // The order process restarted: its counter went from 150 to 20.
        model.apply(&snap(10, vec![up("order", &orders(20, 5))]));
        assert_eq!(
            model.orders["placed"],
            Some(20.0 / 10.0),
            "from the scrape at 0 s: a reset counts whole"
        );
        assert_eq!(
            model.orders_history.values().collect::<Vec<_>>(),
            vec![0.0, 10.0, 2.0]
        );
    }

    #[test]
    fn http_5xx_and_dlq_rates_are_counted_apart_from_the_rest() {
        let mut model = Model::new(ModelConfig::default());
        let text = |ok: u64, bad: u64, dlq: u64| {
            format!(
                "http_requests_total{{method=\"POST\",route=\"/orders\",status=\"202\"}} {ok}\n\
                 http_requests_total{{method=\"POST\",route=\"/orders\",status=\"503\"}} {bad}\n\
                 http_requests_total{{method=\"GET\",route=\"/metrics\",status=\"200\"}} {ok}\n\
                 dlq_messages_total{{consumer=\"payment\",topic=\"orders\",reason=\"permanent\"}} {dlq}\n\
                 dlq_depth{{topic=\"orders.dlq\"}} {dlq}\n"
            )
        };
        model.apply(&snap(0, vec![up("all", &text(10, 0, 0))]));
        model.apply(&snap(2, vec![up("all", &text(30, 4, 1))]));
        assert_eq!(model.errors.http_5xx, Some(2.0));
        assert_eq!(model.errors.http_all, Some(12.0));
        assert_eq!(model.errors.dlq, Some(0.5));
        assert_eq!(model.errors.dlq_depth, Some(1.0));
    }

    #[test]
    fn a_service_going_down_and_coming_back_appears_in_the_event_log() {
        let mut model = Model::new(ModelConfig::default());
        model.apply(&snap(0, vec![up("all", ""), up("order-api", "")]));
        assert!(
            model.log.is_empty(),
            "starting up is not news: {:?}",
            model.log
        );
        model.apply(&snap(1, vec![up("all", ""), down("order-api")]));
        model.apply(&snap(2, vec![up("all", ""), down("order-api")]));
        let mut ready = up("order-api", "");
        ready.ready = Probe::Status(503);
        model.apply(&snap(3, vec![up("all", ""), ready]));
        model.apply(&snap(4, vec![up("all", ""), up("order-api", "")]));
        let log: Vec<_> = model
            .log
            .iter()
            .map(|e| (e.at, e.level, e.text.as_str()))
            .collect();
        assert_eq!(
            log,
            vec![
                (t(1), Level::Bad, "order-api went down (connection refused)"),
                (t(3), Level::Bad, "order-api is not ready (ready: 503)"),
                (t(4), Level::Good, "order-api is up again"),
            ]
        );
        assert_eq!(model.services[1].since, t(4));
    }

    #[test]
    fn lag_has_a_trend_per_group_and_crossing_the_threshold_is_logged() {
        let config = ModelConfig {
            lag_threshold: 100.0,
            rate_span: Duration::from_secs(10),
            ..ModelConfig::default()
        };
        let mut model = Model::new(config);
        let lag = |n0: u64, n1: u64, pay: u64| {
            format!(
                "kafka_consumer_lag{{group=\"notification-service\",topic=\"orders\",partition=\"1\"}} {n1}\n\
                 kafka_consumer_lag{{group=\"notification-service\",topic=\"orders\",partition=\"0\"}} {n0}\n\
                 kafka_consumer_lag{{group=\"payment-service\",topic=\"orders\",partition=\"0\"}} {pay}\n"
            )
        };
        model.apply(&snap(0, vec![up("all", &lag(0, 0, 3))]));
        model.apply(&snap(5, vec![up("all", &lag(40, 30, 3))]));
        model.apply(&snap(10, vec![up("all", &lag(80, 70, 1))]));
        let n = &model.lag["notification-service"];
        assert_eq!(n.total, 150.0);
        assert_eq!(n.trend, Trend::Up);
        assert_eq!(n.partitions[0].partition, "0", "sorted by partition");
        assert_eq!(
            n.history.values().collect::<Vec<_>>(),
            vec![0.0, 70.0, 150.0]
        );
        assert_eq!(model.lag["payment-service"].trend, Trend::Down);
        model.apply(&snap(20, vec![up("all", &lag(10, 0, 1))]));
        model.apply(&snap(25, vec![up("all", &lag(10, 0, 1))]));
        assert_eq!(model.lag["payment-service"].trend, Trend::Flat);
        let log: Vec<_> = model.log.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(
            log,
            vec![
                "lag of notification-service crossed 100: 150 messages behind",
                "lag of notification-service back under 100: 10",
            ]
        );
    }

    #[test]
    fn incidents_switching_on_and_off_are_logged_and_keep_their_target() {
        let mut model = Model::new(ModelConfig::default());
        let with = |active: bool| {
            let mut p = up("payment", "");
            p.incidents = Some(vec![Status {
                name: PAYMENT_SLOWDOWN.into(),
                active,
                description: "1s each way".into(),
                since: active.then(|| t(1)),
            }]);
            p
        };
        model.apply(&snap(0, vec![with(false)]));
        model.apply(&snap(1, vec![with(true)]));
        model.apply(&snap(2, vec![down("payment")]));
        assert!(
            model.incident(PAYMENT_SLOWDOWN).unwrap().active,
            "last known state kept"
        );
        model.apply(&snap(3, vec![with(false)]));
        assert_eq!(model.incident(PAYMENT_SLOWDOWN).unwrap().target, "payment");
        let log: Vec<_> = model.log.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(
            log,
            vec![
                "incident payment-slowdown switched on (payment)",
                "payment went down (connection refused)",
                "payment is up again",
                "incident payment-slowdown switched off (payment)",
            ]
        );
        // A dashboard started after the switch says since when, not "switched on".
        let mut late = Model::new(ModelConfig::default());
        late.apply(&snap(5, vec![with(true)]));
        assert_eq!(
            late.log.back().unwrap().text,
            "incident payment-slowdown is on since 12:00:01 (payment)"
        );
    }

    #[test]
    fn breakers_outboxes_and_process_figures_are_read_from_the_gauges() {
        let mut model = Model::new(ModelConfig::default());
        let text = |state: u8, cpu: f64| {
            format!(
                "circuit_breaker_state{{name=\"payment-provider\"}} {state}\n\
                 outbox_backlog{{database=\"order\"}} 12\n\
                 outbox_oldest_age_seconds{{database=\"order\"}} 3.5\n\
                 process_resident_memory_bytes 104857600\n\
                 process_cpu_seconds_total {cpu}\n"
            )
        };
        model.apply(&snap(0, vec![up("all", &text(0, 10.0))]));
        model.apply(&snap(4, vec![up("all", &text(2, 12.0))]));
        assert_eq!(model.breakers["payment-provider"], Breaker::Open);
        assert_eq!(
            model.outboxes,
            vec![Outbox {
                database: "order".into(),
                backlog: 12.0,
                oldest_age_seconds: Some(3.5)
            }]
        );
        assert_eq!(model.services[0].rss_bytes, Some(104857600.0));
        assert_eq!(model.services[0].cpu_cores, Some(0.5));
        assert_eq!(
            model.log.back().unwrap().text,
            "breaker payment-provider is open"
        );
    }
}
