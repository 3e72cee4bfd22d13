//! Metrics measured from the outside: queues and the process itself.
//!
//! Some of what matters most is not an event in the code but a *quantity* that grows
//! while nothing happens — a consumer that stopped, a relay that cannot publish. So
//! these are sampled, not recorded:
//!
//! * **Consumer lag** per group, topic and partition: the group's committed offset
//!   against the partition's high watermark ([`phase2_events::kafka::LagProbe`]).
//!   The probe never joins the group. Lag is the queue in front of a consumer; its
//!   *trend* says whether the consumer keeps up (lag flat) or not (lag growing).
//! * **Dead-letter depth** per source topic: dead letters on `<topic>.dlq` not yet
//!   replayed — the lag of `phase2-events dlq replay`'s group on it, so the depth
//!   falls back to 0 once the dead letters have been re-driven.
//! * **Outbox backlog** per service database: unpublished rows, and the age of the
//!   oldest. A backlog that is high but young is a burst; an old oldest row is a
//!   relay that is stuck.
//! * **The process** ([`ProcessCollector`]): resident memory, CPU seconds, threads,
//!   open file descriptors, read from `/proc/self` at each scrape (Linux), and the
//!   async runtime's worker threads (`tokio_workers`).

use crate::metrics::Metrics;
use common::shutdown::CancellationToken;
use phase2_events::kafka::LagProbe;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use sqlx::AnyPool;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    group: String,
    topic: String,
    partition: i32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicPartition {
    topic: String,
    partition: i32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatabaseLabel {
    database: String,
}

/// What to watch.
#[derive(Debug, Default)]
pub struct Watch {
    /// `(group, topics)` — see `phase2_events::flow::Topics::subscriptions`.
    pub groups: Vec<(String, Vec<String>)>,
    /// Dead-letter topics.
    pub dead_letter_topics: Vec<String>,
    /// `(service, pool)` of each database with an outbox.
    pub outboxes: Vec<(String, AnyPool)>,
    /// The payment database, for the payment worker's queue.
    pub payments: Option<AnyPool>,
}

/// The sampler: [`Probes::run`] samples every `interval` until shut down.
#[derive(Clone)]
pub struct Probes {
    groups: Arc<Vec<LagProbe>>,
    /// The replay command's group, on the dead-letter topics.
    dead_letters: Option<Arc<LagProbe>>,
    outboxes: Vec<(String, AnyPool)>,
    payments: Option<AnyPool>,
    interval: Duration,
    lag: Family<PartitionLabels, Gauge>,
    committed: Family<PartitionLabels, Gauge>,
    high_watermark: Family<TopicPartition, Gauge>,
    dlq_depth: Family<TopicLabel, Gauge>,
    outbox_backlog: Family<DatabaseLabel, Gauge>,
    outbox_age: Family<DatabaseLabel, Gauge<f64, AtomicU64>>,
    payments_due: Gauge,
    payments_age: Gauge<f64, AtomicU64>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("groups", &self.groups)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl Probes {
    pub fn new(
        metrics: &Metrics,
        brokers: &str,
        watch: Watch,
        interval: Duration,
    ) -> anyhow::Result<Probes> {
        let groups = watch
            .groups
            .into_iter()
            .map(|(group, topics)| LagProbe::new(brokers, &group, topics))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let dead_letters = match watch.dead_letter_topics.is_empty() {
            true => None,
            false => Some(Arc::new(LagProbe::new(
                brokers,
                phase2_events::dlq::REPLAY_GROUP,
                watch.dead_letter_topics,
            )?)),
        };
        Ok(Probes {
            groups: Arc::new(groups),
            dead_letters,
            outboxes: watch.outboxes,
            payments: watch.payments,
            interval,
            lag: metrics.register(
                "kafka_consumer_lag",
                "Messages published but not yet finished by the group (high watermark - committed offset)",
                Family::default(),
            ),
            committed: metrics.register(
                "kafka_consumer_committed_offset",
                "The group's committed offset: the next message it will read",
                Family::default(),
            ),
            high_watermark: metrics.register(
                "kafka_topic_high_watermark",
                "The offset the next message published to the partition will get",
                Family::default(),
            ),
            dlq_depth: metrics.register(
                "dlq_depth",
                "Dead letters of the topic (on <topic>.dlq) not replayed yet",
                Family::default(),
            ),
            outbox_backlog: metrics.register(
                "outbox_backlog",
                "Outbox rows committed but not yet published, by service database",
                Family::default(),
            ),
            outbox_age: metrics.register(
                "outbox_oldest_age_seconds",
                "Age of the oldest unpublished outbox row (0 when none)",
                Family::default(),
            ),
            payments_due: metrics.register(
                "payments_due",
                "Charges and refunds the payment worker has still to make (due or in flight)",
                Gauge::default(),
            ),
            payments_age: metrics.register(
                "payments_oldest_due_age_seconds",
                "How long the oldest due charge or refund has waited (0 when none)",
                Gauge::default(),
            ),
        })
    }

    /// Samples every `interval` until `shutdown`. A failed sample is logged and the
    /// gauges keep their last values (Prometheus's own `up` says whether we answer).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(err) = self.sample().await {
                tracing::warn!(error = format!("{err:#}"), "probe sample failed");
            }
        }
    }

    /// One sample of everything.
    pub async fn sample(&self) -> anyhow::Result<()> {
        for (service, pool) in &self.outboxes {
            let phase2_events::outbox::Backlog {
                events: backlog,
                oldest,
            } = phase2_events::outbox::backlog_of(pool).await?;
            let age = age_of(oldest.as_deref())?;
            let label = DatabaseLabel {
                database: service.clone(),
            };
            self.outbox_backlog.get_or_create(&label).set(backlog);
            self.outbox_age.get_or_create(&label).set(age);
        }
        if let Some(pool) = &self.payments {
            let (due, oldest) = phase2_events::services::payment::queue(pool).await?;
            self.payments_due.set(due);
            self.payments_age.set(age_of(oldest.as_deref())?);
        }
        let probes = self.clone();
        tokio::task::spawn_blocking(move || probes.sample_kafka()).await?
    }

    fn sample_kafka(&self) -> anyhow::Result<()> {
        let timeout = Duration::from_secs(5);
        let samples = phase2_events::kafka::sample_all(&self.groups, timeout)?;
        for (probe, partitions) in self.groups.iter().zip(samples) {
            for partition in partitions {
                let labels = PartitionLabels {
                    group: probe.group().to_owned(),
                    topic: partition.topic.clone(),
                    partition: partition.partition,
                };
                self.lag.get_or_create(&labels).set(partition.lag());
                self.committed
                    .get_or_create(&labels)
                    .set(partition.committed.unwrap_or(partition.low_watermark));
                self.high_watermark
                    .get_or_create(&TopicPartition {
                        topic: partition.topic,
                        partition: partition.partition,
                    })
                    .set(partition.high_watermark);
            }
        }
        if let Some(probe) = &self.dead_letters {
            let mut depth: std::collections::BTreeMap<String, i64> = Default::default();
            for partition in probe.sample(timeout)? {
                let source = partition
                    .topic
                    .strip_suffix(".dlq")
                    .unwrap_or(&partition.topic)
                    .to_owned();
                *depth.entry(source).or_default() += partition.lag();
            }
            for (topic, depth) in depth {
                self.dlq_depth
                    .get_or_create(&TopicLabel { topic })
                    .set(depth);
            }
        }
        Ok(())
    }
}

/// Seconds since `oldest` (RFC 3339 text: the same code runs on SQLite in phase 1),
/// 0 when there is none.
fn age_of(oldest: Option<&str>) -> anyhow::Result<f64> {
    Ok(match oldest {
        Some(text) => {
            let at = common::db::parse_timestamp(text)?;
            (chrono::Utc::now() - at).as_seconds_f64().max(0.0)
        }
        None => 0.0,
    })
}

/// `process_*` metrics, read from `/proc/self` at every scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        #[allow(unused_mut, unused_variables)]
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        #[cfg(target_os = "linux")]
        {
            use prometheus_client::encoding::EncodeMetric;
            use prometheus_client::metrics::counter::ConstCounter;
            use prometheus_client::metrics::gauge::ConstGauge;
            let Ok(me) = procfs::process::Process::myself() else {
                return Ok(());
            };
            let Ok(stat) = me.stat() else { return Ok(()) };
            let ticks = procfs::ticks_per_second() as f64;
            let page = procfs::page_size();
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                cpu.metric_type(),
            )?)?;
            let gauges: [(&str, &str, f64); 4] = [
                (
                    "process_resident_memory_bytes",
                    "Resident memory size (RSS), in bytes",
                    (stat.rss * page) as f64,
                ),
                (
                    "process_virtual_memory_bytes",
                    "Virtual memory size, in bytes",
                    stat.vsize as f64,
                ),
                (
                    "process_threads",
                    "Operating system threads",
                    stat.num_threads as f64,
                ),
                (
                    "process_start_time_seconds",
                    "Start time of the process since the Unix epoch, in seconds",
                    procfs::boot_time_secs().unwrap_or(0) as f64 + stat.starttime as f64 / ticks,
                ),
            ];
            for (name, help, value) in gauges {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
            if let Ok(fds) = me.fd_count() {
                let gauge = ConstGauge::new(fds as f64);
                gauge.encode(encoder.encode_descriptor(
                    "process_open_fds",
                    "Open file descriptors",
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            use prometheus_client::encoding::EncodeMetric;
            let gauge = prometheus_client::metrics::gauge::ConstGauge::new(
                runtime.metrics().num_workers() as i64,
            );
            gauge.encode(encoder.encode_descriptor(
                "tokio_workers",
                "Worker threads of the async runtime: one per CPU it found at start, the CPU quota of its cgroup included",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
