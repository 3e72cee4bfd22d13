//! Chaos scenarios: a hypothesis, a fault, a check — each one command,
//! `phase4-chaos scenario NAME [--rate R] [--duration D] [--seed N]`.
//!
//! A scenario starts its own platform (every service a supervised process, on fresh
//! databases and topics, ports shifted by `--port-offset`), puts the load generator on
//! it, injects its faults at moments the seed chooses, and then holds the books to
//! what clients were told ([`verdict`]). Every run leaves a results folder
//! (`.ferriseats/runs/<time>-<scenario>/`): the configuration and seed, the verdict,
//! a short report and the load report.
//!
//! | scenario | fault | the defence that makes it pass | `--no-defence` instead | what the checker then says |
//! |---|---|---|---|---|
//! | `kill-service` | SIGKILL a consumer (payment), an order API replica, the relay, in turn | the supervisor restarts them; the outbox, offsets and leases let the new process finish what the old one held | the supervisor restarts nothing | nothing lost ✘ (orders left behind), recovered ✘ |
//! | `kill-broker-node` | SIGKILL one node of a three-node Kafka cluster (the scenario's own), start it again | three copies of each partition, a write acknowledged by two | one copy of each partition | absorbed ✘ (orders accepted meanwhile wait for the node) |
//! | `broker-restart` | SIGKILL the broker (one node, the scenario's own), start it again on its storage | the transactional outbox: accepting an order never needs the broker | the order API publishes itself after the commit (`ORDER_PUBLISH=direct`) | nothing lost ✘ (orders stuck `placed`) |
//! | `latency` | the provider ten times slower, then the inventory's database 50 ms further (fault proxy) | timeouts sized to the dependency (an attempt may take 1 s), and the payment client's circuit breaker | an attempt may take 300 ms, and the breaker never opens | retries within budget ✘ (provider calls per charge) |
//! | `partition` | the payment service cut off from the broker (held), then the inventory from its database (reset, a fifth of the run), each healed | consumer offsets and the outbox hold the work; a consumer without its database pauses and probes | consumers retry every event (`CONSUMER_WHEN_DATABASE_UNREACHABLE=retry`) | nothing lost ✘ (events dead-lettered once their three retries ran out) |
//! | `db-restart` | PostgreSQL (the scenario's own) crashes, is down a tenth of the run, starts again | what was acknowledged is in the WAL; pools reconnect; the relay's loop runs again on new connections | a failed relay is not restarted (`RELAY_RESTART=false`) | nothing lost ✘ (orders stuck `placed`: their events never left the outbox) |
//!
//! | concern | where |
//! |---|---|
//! | the scenarios, their hypotheses and faults | [`Scenario`] |
//! | the fault schedule, from the seed | [`Scenario::schedule`] |
//! | a platform of its own: databases, topics, ports, supervisor, provider | [`Platform`] |
//! | the verdict: nothing lost, at most once, books, recovery, no cascade | [`verdict`] |
//! | the results folder | [`Outcome::write`] |
//! | lag and provider calls each second; retries and finishing times per fault | [`watch`] |
//! | the picture of a run: answers, p99, errors and lag per second, faults shaded | [`picture`] |
//! | what the dashboard shows while it runs: faults now, the run's orders (9430) | `Live` |

pub mod gameday;
pub mod picture;
pub mod verdict;
pub mod watch;

use crate::load::run::{self, LoadArgs, LoadReport};
use crate::supervisor::{Supervisor, SupervisorSettings};
use crate::system::{Layout, RunningProvider, platform};
use anyhow::Context;
use common::shutdown::CancellationToken;
use common_local::local_kafka::LocalCluster;
use common_local::local_kafka::cluster::Options as ClusterOptions;
use common_local::local_postgres::LocalPostgres;
use phase2_events::books::{self, Books};
use phase2_events::config::Settings;
use phase2_events::fault_proxy::FaultProxy;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use verdict::{Judged, Verdict};

/// A chaos experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// SIGKILL a consumer (payment), an order API replica (order-1) and the relay, in
    /// turn, under load.
    KillService,
    /// SIGKILL one node of a three-node Kafka cluster (the scenario's own), then start
    /// it again.
    KillBrokerNode,
    /// SIGKILL the broker (one node, the scenario's own) and start it again on its
    /// storage, under load.
    BrokerRestart,
    /// The payment provider slows down ten times, then the inventory's database
    /// answers 100 ms later (through the fault proxy).
    Latency,
    /// The payment service is cut off from the broker (its connections held: nothing
    /// delivered, nothing reset), then the inventory from its database (connections
    /// reset, new ones refused); each heals.
    Partition,
    /// PostgreSQL (a server of the scenario's own) crashes and starts again on its
    /// data, under load.
    DbRestart,
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Action {
    /// SIGKILL a supervised process (the supervisor brings it back).
    Kill { process: String },
    /// SIGKILL one broker node; start it again `lasts_ms` later.
    KillBrokerNode { node: u32 },
    /// SIGKILL every broker node, start them again at once on their storage.
    RestartBroker,
    /// The provider answers within `latency` (e.g. `500ms..900ms`) for `lasts_ms`.
    ProviderLatency { latency: String },
    /// The inventory's database is `latency_ms` further away (each way), for `lasts_ms`.
    InventoryDatabaseLatency { latency_ms: u64 },
    /// The inventory cannot reach its database at all, for `lasts_ms`.
    InventoryDatabaseCut,
    /// `process` reaches the broker through a link that delivers nothing, for
    /// `lasts_ms`.
    CutFromBroker { process: String },
    /// PostgreSQL stops as in a crash (`immediate`) and starts again `lasts_ms` later.
    RestartDatabase,
}

/// One fault of a run: what, when (from the start of the load), and when it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub action: Action,
    pub at_ms: u64,
    /// How long it lasts by the schedule (0 for an instant, like a SIGKILL the
    /// supervisor answers).
    pub lasts_ms: u64,
    /// When it actually ended (the node back, say), once injected: recovery is
    /// measured from here.
    pub ended_ms: Option<u64>,
    /// Whether reads (menu, order status) go through what it hits: if not, they must
    /// keep their SLO meanwhile (no cascade).
    pub reads_untouched: bool,
    /// Whether the platform is built to absorb it, not just to recover from it: the
    /// orders accepted while it lasts must still finish within the recovery target.
    pub absorbed: bool,
}

impl Fault {
    /// `SIGKILL payment`, `broker node 2 down`, …
    pub fn name(&self) -> String {
        match &self.action {
            Action::Kill { process } => format!("SIGKILL {process}"),
            Action::KillBrokerNode { node } => format!("broker node {node} down"),
            Action::RestartBroker => "broker restarted".to_owned(),
            Action::ProviderLatency { latency } => format!("provider at {latency}"),
            Action::InventoryDatabaseLatency { latency_ms } => {
                format!("inventory's database +{latency_ms} ms")
            }
            Action::InventoryDatabaseCut => "inventory cut off from its database".to_owned(),
            Action::CutFromBroker { process } => format!("{process} cut off from the broker"),
            Action::RestartDatabase => "PostgreSQL crashed and restarted".to_owned(),
        }
    }

    /// The supervised process it hits, if any (others must not restart).
    pub fn process(&self) -> Option<&str> {
        match &self.action {
            Action::Kill { process } => Some(process),
            _ => None,
        }
    }

    /// When recovery is measured from, in milliseconds from the start of the load.
    pub fn end_ms(&self) -> u64 {
        self.ended_ms.unwrap_or(self.at_ms + self.lasts_ms)
    }
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::KillService => "kill-service",
            Scenario::KillBrokerNode => "kill-broker-node",
            Scenario::BrokerRestart => "broker-restart",
            Scenario::Latency => "latency",
            Scenario::Partition => "partition",
            Scenario::DbRestart => "db-restart",
        }
    }

    /// Whether the inventory reaches its database through a fault proxy.
    pub fn proxies_inventory_db(self) -> bool {
        matches!(self, Scenario::Latency | Scenario::Partition)
    }

    /// Broker nodes of the scenario's own to run on (`None`: the broker of `cargo
    /// xtask up`, shared with everything else, which a scenario must not break).
    pub fn own_brokers(self) -> Option<usize> {
        match self {
            Scenario::KillBrokerNode => Some(3),
            // Partition: a node with a second listener, behind a proxy, for the
            // service it cuts off.
            Scenario::BrokerRestart | Scenario::Partition => Some(1),
            Scenario::KillService | Scenario::Latency | Scenario::DbRestart => None,
        }
    }

    /// Whether it runs on a PostgreSQL server of its own (one it crashes).
    pub fn own_postgres(self) -> bool {
        self == Scenario::DbRestart
    }

    /// What the run sets out to show.
    pub fn hypothesis(self) -> &'static str {
        match self {
            Scenario::KillService => {
                "Killing any one service process (no goodbye, no flush) loses no accepted \
                 order, charges no card twice, and the platform is back to its steady state \
                 within the recovery target without a human: the supervisor restarts the \
                 process, and the outbox, the consumer offsets and the payment leases let the \
                 new process finish what the dead one held."
            }
            Scenario::KillBrokerNode => {
                "Losing one Kafka node of three under load loses no accepted order and no \
                 event, and the platform keeps its steady state: every partition has three \
                 copies, a write counts once two have it (acks=all, min.insync.replicas=2), \
                 and clients move to the new leaders by themselves."
            }
            Scenario::BrokerRestart => {
                "A broker that crashes and comes back loses no accepted order: the order \
                 API never needs the broker to accept one (the order and its event commit \
                 together in the outbox), the relay publishes what waited once the broker \
                 is back, and consumers resume from their committed offsets."
            }
            Scenario::Latency => {
                "A slow payment provider and a slow inventory database slow the orders \
                 down, not the rest: menu and status reads keep their SLO, nothing is lost \
                 or charged twice, and the platform is back to its steady state soon after \
                 the latency goes."
            }
            Scenario::Partition => {
                "A service cut off from the broker, or from its database, holds its work \
                 instead of failing it: the payment consumer's offsets and the outbox keep \
                 what it could not take or send, and a consumer without its database pauses \
                 its partitions and probes instead of pushing every event round the retry \
                 topic. When the network heals each resumes by itself, and no accepted order \
                 is lost."
            }
            Scenario::DbRestart => {
                "PostgreSQL crashing under load and staying down a while loses nothing it \
                 acknowledged: every commit it confirmed is in its write-ahead log and is \
                 replayed when it starts again; requests during the outage are refused \
                 (never half-accepted); consumers pause and probe; pools reconnect; and \
                 the long-lived loops whose own connections died with the server (the \
                 relay's LISTEN and leader lock) are run again on new ones — everything \
                 resumes without a human."
            }
        }
    }

    /// The defence that makes it pass, and what `--no-defence` does instead.
    pub fn defence(self) -> (&'static str, &'static str) {
        match self {
            Scenario::KillService => (
                "the supervisor restarts what dies",
                "the supervisor restarts nothing",
            ),
            Scenario::KillBrokerNode => (
                "three copies of every partition, writes acknowledged by two",
                "one copy of each partition (replication factor 1)",
            ),
            Scenario::BrokerRestart => (
                "the transactional outbox: an order never waits for the broker",
                "the order API publishes OrderPlaced itself after the commit (ORDER_PUBLISH=direct)",
            ),
            Scenario::Latency => (
                "timeouts sized to the dependency (a payment attempt may take 1 s), and a circuit breaker that stops calling a provider that keeps failing",
                "a payment attempt may take 300 ms (PAYMENT_ATTEMPT_TIMEOUT), less than the slow provider needs, and the breaker never opens (BREAKER_MIN_CALLS)",
            ),
            Scenario::Partition => (
                "consumers pause their partitions while their database is unreachable",
                "consumers retry every event through the retry topic (CONSUMER_WHEN_DATABASE_UNREACHABLE=retry)",
            ),
            Scenario::DbRestart => (
                "a relay whose connections died with the server runs again, on new ones",
                "a failed relay is not restarted (RELAY_RESTART=false): the process and its health check carry on, the outbox is never published again",
            ),
        }
    }

    /// The environment `--no-defence` gives every process.
    fn defence_off_env(self) -> Vec<(String, String)> {
        let pairs: &[(&str, &str)] = match self {
            Scenario::BrokerRestart => &[("ORDER_PUBLISH", "direct")],
            // Both: with the breaker on, a mis-sized timeout soon opens it and the
            // breaker alone holds the retries back (sometimes, depending on timing).
            Scenario::Latency => &[
                ("PAYMENT_ATTEMPT_TIMEOUT", "300ms"),
                ("BREAKER_MIN_CALLS", "1000000"),
            ],
            Scenario::Partition => &[("CONSUMER_WHEN_DATABASE_UNREACHABLE", "retry")],
            Scenario::DbRestart => &[("RELAY_RESTART", "false")],
            // Switched off in the supervisor and the scenario's own broker instead
            // (see `Platform::start`).
            Scenario::KillService | Scenario::KillBrokerNode => &[],
        };
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The faults of a run of `duration`, at moments drawn from `seed`: spread over
    /// the middle half of the run (the first quarter is the steady state they are
    /// measured against, the last quarter leaves room to recover), one per slot.
    pub fn schedule(self, duration: Duration, seed: u64) -> Vec<Fault> {
        let kill = |process: &str| Action::Kill {
            process: process.to_owned(),
        };
        // (what, how long, reads untouched)
        let planned: Vec<(Action, u64, bool)> = match self {
            // A restart that takes a while (crash recovery of a large log, a slow
            // disk): a tenth of the run.
            Scenario::DbRestart => vec![(
                Action::RestartDatabase,
                duration.as_millis() as u64 / 10,
                false,
            )],
            Scenario::KillService => vec![
                (kill("payment"), 0, true),
                (kill("order-1"), 0, false),
                (kill("relay"), 0, true),
            ],
            Scenario::KillBrokerNode => vec![(
                Action::KillBrokerNode { node: 2 },
                duration.as_millis() as u64 / 10,
                true,
            )],
            Scenario::BrokerRestart => vec![(Action::RestartBroker, 0, true)],
            Scenario::Latency => vec![
                (
                    Action::ProviderLatency {
                        latency: "500ms..900ms".to_owned(),
                    },
                    duration.as_millis() as u64 / 8,
                    true,
                ),
                (
                    Action::InventoryDatabaseLatency { latency_ms: 50 },
                    duration.as_millis() as u64 / 8,
                    true,
                ),
            ],
            Scenario::Partition => vec![
                (
                    Action::CutFromBroker {
                        process: "payment".to_owned(),
                    },
                    duration.as_millis() as u64 / 8,
                    true,
                ),
                // A fifth of the run (12 s of 60): longer than the retry topic's three
                // retries (0.5 s, 2 s, 8 s) take to run out.
                (
                    Action::InventoryDatabaseCut,
                    duration.as_millis() as u64 / 5,
                    true,
                ),
            ],
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let start = duration.as_millis() as u64 / 4;
        // A node of three takes 10–30 s to start again on a busy laptop (a JVM,
        // its log recovered): its fault goes in the first third of the middle half,
        // so that the run still has room to see the platform after it.
        let slots = match self {
            Scenario::KillBrokerNode => 3,
            _ => planned.len() as u64,
        };
        let slot = duration.as_millis() as u64 / 2 / slots;
        planned
            .into_iter()
            .enumerate()
            .map(|(i, (action, lasts_ms, reads_untouched))| Fault {
                action,
                at_ms: start + i as u64 * slot + rng.random_range(0..=slot / 3),
                lasts_ms,
                ended_ms: None,
                reads_untouched,
                absorbed: self == Scenario::KillBrokerNode,
            })
            .collect()
    }
}

/// `phase4-chaos scenario NAME`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct ScenarioArgs {
    #[arg(required_unless_present = "all")]
    pub scenario: Option<Scenario>,
    /// Every scenario in turn, each on a platform of its own, and a table of them.
    #[arg(long, conflicts_with = "scenario")]
    pub all: bool,
    /// Requests per second of the default mix (open model).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// How long the load runs; the faults fall in its middle half.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    #[serde(with = "crate::load::run::secs")]
    pub duration: Duration,
    /// Fixes the fault schedule and the request mix.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Turn the scenario's defence off, to see the checker fail (each scenario's
    /// defence, and what this does instead, is in the table of `phase4-chaos --help`
    /// and the report). `--no-restart` is its old name for `kill-service`.
    #[arg(long, alias = "no-restart")]
    pub no_defence: bool,
    /// How long, after the load, the books may take to agree.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    #[serde(with = "crate::load::run::secs")]
    pub drain: Duration,
    /// The brief's recovery target: back to the steady state this soon after a fault.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "crate::load::run::secs")]
    pub recovery_target: Duration,
    /// The gateway's p99 SLO (the steady state, and reads during a fault elsewhere).
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    #[serde(with = "crate::load::run::secs")]
    pub slo_p99: Duration,
    /// Every port of the platform shifted by this (to run beside `phase4-chaos all`).
    #[arg(long, default_value_t = 0)]
    pub port_offset: u16,
    /// Where the results folder goes.
    #[arg(long, default_value = ".ferriseats/runs")]
    pub runs: PathBuf,
    /// Keep the run's databases (dropped by default).
    #[arg(long)]
    pub keep: bool,
    /// Load at the run's rate before the measured run, not judged: consumer groups
    /// assigned, pools and caches warm.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "crate::load::run::secs")]
    pub warmup: Duration,
    /// Flags for both gateways, after `--` (e.g. `-- --order-target 5s`).
    #[arg(last = true)]
    pub gateway_args: Vec<String>,
    /// The program the supervisor starts (this one, by default).
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub binary: Option<PathBuf>,
    /// A game day's sealed record (`gameday`): the fault is not named while the run
    /// lasts, and the moment it is injected is written there.
    #[arg(skip)]
    #[serde(skip)]
    pub gameday: Option<PathBuf>,
}

/// What a scenario shows while it runs, on its ops port (9430): the faults being
/// injected (`chaos_fault_active{fault}`) and the run's orders (`chaos_orders_accepted`,
/// `_final`, `_in_flight`, from the order database every second). The dashboard's
/// Chaos panel reads them.
#[derive(Debug, Clone, Default)]
struct Live {
    faults: Family<FaultLabels, Gauge>,
    accepted: Gauge,
    final_orders: Gauge,
    in_flight: Gauge,
    lag: Gauge,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FaultLabels {
    fault: String,
}

impl Live {
    /// Serves `/health` and `/metrics` on `addr`, and counts the orders, until `stop`.
    async fn serve(
        &self,
        addr: std::net::SocketAddr,
        orders_db: sqlx::AnyPool,
        stop: CancellationToken,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let mut registry = Registry::default();
        registry.register(
            "chaos_fault_active",
            "1 while the scenario injects this fault",
            self.faults.clone(),
        );
        registry.register(
            "chaos_orders_accepted",
            "Orders the run's platform accepted",
            self.accepted.clone(),
        );
        registry.register(
            "chaos_orders_final",
            "Of those, delivered or cancelled",
            self.final_orders.clone(),
        );
        registry.register(
            "chaos_orders_in_flight",
            "Of those, not final yet",
            self.in_flight.clone(),
        );
        registry.register(
            "chaos_consumer_lag",
            "Messages published and not yet finished, every consumer group of the run",
            self.lag.clone(),
        );
        let router = crate::ops_router(Arc::new(registry), || {});
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("the scenario's ops port {addr} is taken"))?;
        let live = self.clone();
        Ok(tokio::spawn(async move {
            let server = axum::serve(listener, router)
                .with_graceful_shutdown(stop.clone().cancelled_owned());
            let count = async {
                loop {
                    let counted: Result<(i64, i64), _> = sqlx::query_as(
                        "SELECT count(*), count(*) FILTER (WHERE status IN ('delivered', 'cancelled')) FROM orders",
                    )
                    .fetch_one(&orders_db)
                    .await;
                    if let Ok((accepted, done)) = counted {
                        live.accepted.set(accepted);
                        live.final_orders.set(done);
                        live.in_flight.set(accepted - done);
                    }
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            };
            let (served, ()) = tokio::join!(server, count);
            if let Err(err) = served {
                tracing::warn!(error = %err, "the scenario's ops server stopped");
            }
        }))
    }

    /// Shows `fault` as injected for at least a few seconds (a SIGKILL is an
    /// instant; a dashboard polling every second must still see it).
    fn showing(&self, fault: &Fault, hidden: bool) -> impl FnOnce() + use<> {
        let name = if hidden {
            "something (game day)".to_owned()
        } else {
            fault.name()
        };
        let gauge = self
            .faults
            .get_or_create(&FaultLabels { fault: name })
            .clone();
        gauge.set(1);
        let since = Instant::now();
        move || {
            let rest = Duration::from_secs(5).saturating_sub(since.elapsed());
            tokio::spawn(async move {
                tokio::time::sleep(rest).await;
                gauge.set(0);
            });
        }
    }
}

/// A platform of the scenario's own: fresh databases and topics, every service a
/// supervised process, the provider in this process (its ledger is in the books).
struct Platform {
    layout: Layout,
    settings: Settings,
    supervisor: Supervisor,
    provider: RunningProvider,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    databases: Vec<String>,
    /// Broker nodes of the scenario's own, when its fault is the broker.
    broker: Option<Arc<Mutex<LocalCluster>>>,
    /// The fault proxy between the inventory service and PostgreSQL, for the
    /// scenarios whose faults go through it (a proxy costs every query a hop).
    inventory_db: Option<FaultProxy>,
    /// The fault proxy between the payment service and the broker (`partition`).
    payment_broker: Option<FaultProxy>,
    /// PostgreSQL of the scenario's own, when its fault is the database server.
    postgres: Option<Arc<LocalPostgres>>,
    /// The books' admin URL: the shared server's, or the scenario's own.
    admin_url: String,
}

/// The load's stock: plenty, so that cancellations are the scenario's, not the menu's.
const STOCK: i64 = 1_000_000;

impl Platform {
    async fn start(
        args: &ScenarioArgs,
        scenario: Scenario,
        run_id: &str,
    ) -> anyhow::Result<Platform> {
        let layout = Layout {
            offset: args.port_offset,
        };
        let off = args.no_defence;
        // `partition` cuts the payment service off from the broker: it alone dials a
        // second listener, through a fault proxy.
        let payment_broker = if scenario == Scenario::Partition {
            let port = common_local::local_kafka::cluster::free_port()?;
            Some(FaultProxy::start("127.0.0.1:0".parse()?, ([127, 0, 0, 1], port).into()).await?)
        } else {
            None
        };
        let broker = match scenario.own_brokers() {
            Some(nodes) => {
                let options = ClusterOptions {
                    nodes,
                    // Replication switched off: one copy of each partition.
                    replicas: (off && scenario == Scenario::KillBrokerNode).then_some(1),
                    faultable: payment_broker
                        .as_ref()
                        .map(|proxy| (proxy.upstream().port(), proxy.addr())),
                };
                eprintln!(
                    "chaos: starting {nodes} Kafka node(s) of the scenario's own ({} cop{} of each partition)…",
                    options.replicas.unwrap_or(nodes),
                    if options.replicas.unwrap_or(nodes) == 1 {
                        "y"
                    } else {
                        "ies"
                    }
                );
                let cluster =
                    tokio::task::spawn_blocking(move || LocalCluster::start_with(options))
                        .await?
                        .context(
                            "starting the scenario's own Kafka (installed by `cargo xtask up`)",
                        )?;
                Some(Arc::new(Mutex::new(cluster)))
            }
            None => None,
        };
        let postgres = if scenario.own_postgres() {
            eprintln!("chaos: starting a PostgreSQL server of the scenario's own…");
            let server = tokio::task::spawn_blocking(LocalPostgres::start)
                .await?
                .context("starting the scenario's own PostgreSQL")?;
            Some(Arc::new(server))
        } else {
            None
        };
        let admin_url = postgres.as_ref().map_or_else(
            || common_local::endpoints::LOCAL_POSTGRES_URL.to_owned(),
            |server| server.url("postgres"),
        );
        let admin = admin_url.as_str();
        let databases: Vec<String> = ["orders", "payments", "inventory", "delivery"]
            .iter()
            .map(|name| format!("ferriseats_chaos_{run_id}_{name}"))
            .collect();
        let url = |i: usize| common_local::endpoints::with_database(admin, &databases[i]);
        let namespace = format!("chaos-{run_id}");
        let mut settings = Settings::defaults();
        if let Some(broker) = &broker {
            settings.brokers = broker.lock().expect("broker lock").brokers();
        }
        let env: Vec<(String, String)> = [
            ("KAFKA_BROKERS", settings.brokers.clone()),
            ("ORDER_DATABASE_URL", url(0)),
            ("PAYMENT_DATABASE_URL", url(1)),
            ("INVENTORY_DATABASE_URL", url(2)),
            ("DELIVERY_DATABASE_URL", url(3)),
            ("TOPIC_NAMESPACE", namespace.clone()),
            ("OTEL_SDK_DISABLED", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        settings.order_database_url = url(0);
        settings.payment_database_url = url(1);
        settings.inventory_database_url = url(2);
        settings.delivery_database_url = url(3);
        settings.namespace = namespace;

        let mut env = env;
        if off {
            env.extend(scenario.defence_off_env());
        }
        let mut programs = platform(
            layout,
            layout.orders(),
            STOCK,
            Some(&args.gateway_args),
            &env,
        );
        if let Some(proxy) = &payment_broker {
            for program in programs.iter_mut().filter(|p| p.name == "payment") {
                program
                    .env
                    .push(("KAFKA_BROKERS".to_owned(), proxy.addr().to_string()));
            }
        }
        // For the faults between the inventory and its database, it reaches it
        // through a fault proxy (latency, cuts); the books read it directly.
        let inventory_db = if scenario.proxies_inventory_db() {
            let server = reqwest::Url::parse(admin)?;
            let postgres: std::net::SocketAddr = format!(
                "{}:{}",
                server.host_str().unwrap_or("127.0.0.1"),
                server.port().unwrap_or(5432)
            )
            .parse()?;
            let proxy = FaultProxy::start("127.0.0.1:0".parse()?, postgres).await?;
            let through = url(2).replace(&postgres.to_string(), &proxy.addr().to_string());
            for program in programs.iter_mut().filter(|p| p.name == "inventory") {
                program
                    .env
                    .push(("INVENTORY_DATABASE_URL".to_owned(), through.clone()));
            }
            Some(proxy)
        } else {
            None
        };
        let provider = RunningProvider::start(layout.provider()).await?;
        let binary = match &args.binary {
            Some(binary) => binary.clone(),
            None => std::env::current_exe().context("finding this program")?,
        };
        let supervisor_settings: SupervisorSettings = crate::parse_flags(&[])?;
        let supervisor_settings = SupervisorSettings {
            no_restart: off && scenario == Scenario::KillService,
            supervisor_ops_addr: layout.supervisor_ops(),
            logs: args.runs.join(format!("{run_id}-logs")),
            ..supervisor_settings
        };
        let supervisor = Supervisor::new(supervisor_settings, binary);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(supervisor.clone().run(programs.clone(), shutdown.clone()));
        let platform = Platform {
            layout,
            settings,
            supervisor,
            provider,
            shutdown,
            task,
            databases,
            broker,
            inventory_db,
            payment_broker,
            postgres,
            admin_url,
        };
        platform.ready(&programs, Duration::from_secs(120)).await?;
        Ok(platform)
    }

    /// Waits until every process answers on its ops port, and the gateways are ready.
    async fn ready(
        &self,
        programs: &[crate::supervisor::Program],
        limit: Duration,
    ) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + limit;
        for program in programs {
            let Some(ops) = program.ops else { continue };
            let path = if program.name.starts_with("gateway") {
                "ready"
            } else {
                "health"
            };
            let url = format!("http://{ops}/{path}");
            loop {
                if let Ok(answer) = http.get(&url).send().await
                    && answer.status().is_success()
                {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{} did not answer {url} within {limit:?} (its log: {})",
                    program.name,
                    self.supervisor_log(&program.name).display()
                );
                if self.task.is_finished() {
                    anyhow::bail!("the supervisor stopped while the platform started");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    fn supervisor_log(&self, name: &str) -> PathBuf {
        self.supervisor.log_path(name)
    }

    async fn books(&self) -> anyhow::Result<(sqlx::AnyPool, sqlx::AnyPool)> {
        let orders = common::db::connect(&self.settings.order_database_url, 2).await?;
        let inventory = common::db::connect(&self.settings.inventory_database_url, 2).await?;
        Ok((orders, inventory))
    }

    async fn stop(self, keep: bool) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let stopped = self.task.await;
        self.provider.stop().await?;
        for proxy in [self.inventory_db, self.payment_broker]
            .into_iter()
            .flatten()
        {
            proxy.stop().await;
        }
        if let Some(server) = self.postgres {
            if keep {
                eprintln!(
                    "chaos: --keep: the scenario's own PostgreSQL goes with it; its log was {}",
                    server.log().display()
                );
            }
            // Stopped and removed on drop.
            tokio::task::spawn_blocking(move || drop(server)).await?;
        } else if !keep {
            let names: Vec<&str> = self.databases.iter().map(String::as_str).collect();
            crate::bench::phase2::drop_databases_named(&self.admin_url, &names);
        }
        if let Some(broker) = self.broker {
            // Its nodes are SIGKILLed and their storage removed on drop.
            tokio::task::spawn_blocking(move || drop(broker)).await?;
        }
        stopped??;
        Ok(())
    }

    /// Injects `fault`; returns once it is over (a node back), or at once for an
    /// instant one.
    async fn inject(&self, fault: &Fault) -> anyhow::Result<String> {
        let cluster = || {
            self.broker
                .clone()
                .context("this scenario runs on the shared broker")
        };
        match &fault.action {
            Action::Kill { process } => {
                let pid = self.supervisor.kill(process)?;
                Ok(format!("SIGKILL {process} (pid {pid})"))
            }
            Action::KillBrokerNode { node } => {
                let (cluster, node) = (cluster()?, *node);
                let killed = cluster.clone();
                tokio::task::spawn_blocking(move || killed.lock().expect("broker").kill(node))
                    .await?;
                eprintln!("chaos: broker node {node} SIGKILLed");
                tokio::time::sleep(Duration::from_millis(fault.lasts_ms)).await;
                tokio::task::spawn_blocking(move || {
                    cluster.lock().expect("broker").start_node(node)
                })
                .await??;
                Ok(format!("broker node {node} killed, and back"))
            }
            Action::RestartBroker => {
                let cluster = cluster()?;
                tokio::task::spawn_blocking(move || cluster.lock().expect("broker").restart())
                    .await??;
                Ok("broker SIGKILLed and started again on its storage".to_owned())
            }
            Action::ProviderLatency { latency } => {
                let control = format!("http://{}/control", self.layout.provider());
                let http = reqwest::Client::new();
                let range = self.provider.simulator.behaviour().latency;
                let before = format!("{}ms..{}ms", range.min.as_millis(), range.max.as_millis());
                let set = |latency: String| {
                    http.put(&control)
                        .json(&serde_json::json!({ "latency": latency }))
                        .send()
                };
                set(latency.clone()).await?.error_for_status()?;
                eprintln!("chaos: provider latency {latency} (was {before})");
                tokio::time::sleep(Duration::from_millis(fault.lasts_ms)).await;
                set(before.clone()).await?.error_for_status()?;
                Ok(format!("provider at {latency}, then back to {before}"))
            }
            Action::InventoryDatabaseLatency { latency_ms } => {
                let faults = self
                    .inventory_db
                    .as_ref()
                    .context("this scenario runs without the inventory's database proxy")?
                    .faults();
                faults.set_latency(Duration::from_millis(*latency_ms));
                tokio::time::sleep(Duration::from_millis(fault.lasts_ms)).await;
                faults.clear();
                Ok(format!(
                    "inventory's database +{latency_ms} ms each way, then healed"
                ))
            }
            Action::CutFromBroker { process } => {
                let faults = self
                    .payment_broker
                    .as_ref()
                    .context("this scenario runs without a proxy to the broker")?
                    .faults();
                faults.set_held(true);
                tokio::time::sleep(Duration::from_millis(fault.lasts_ms)).await;
                faults.set_held(false);
                Ok(format!(
                    "{process} cut off from the broker (connections held), then healed"
                ))
            }
            Action::RestartDatabase => {
                let server = self
                    .postgres
                    .clone()
                    .context("this scenario runs on the shared PostgreSQL")?;
                let crashed = server.clone();
                tokio::task::spawn_blocking(move || crashed.crash()).await??;
                tokio::time::sleep(Duration::from_millis(fault.lasts_ms)).await;
                tokio::task::spawn_blocking(move || server.start_again()).await??;
                Ok(format!(
                    "PostgreSQL crashed (immediate stop), down {:.1} s, started again on its data",
                    fault.lasts_ms as f64 / 1000.0
                ))
            }
            Action::InventoryDatabaseCut => {
                let faults = self
                    .inventory_db
                    .as_ref()
                    .context("this scenario runs without the inventory's database proxy")?
                    .faults();
                faults.set_down(true);
                tokio::time::sleep(Duration::from_millis(fault.lasts_ms)).await;
                faults.set_down(false);
                Ok("inventory cut off from its database, then healed".to_owned())
            }
        }
    }
}

/// A finished run: what was done, what was seen, the verdict.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub scenario: Scenario,
    pub hypothesis: &'static str,
    pub defence: &'static str,
    /// `--no-defence`: what the run did instead.
    pub defence_off: Option<&'static str>,
    pub config: ScenarioArgs,
    pub faults: Vec<Fault>,
    pub verdict: Verdict,
    #[serde(skip)]
    pub load: LoadReport,
    /// Every second: consumer lag, provider requests.
    pub samples: Vec<watch::Sample>,
    #[serde(skip)]
    pub folder: PathBuf,
}

impl Outcome {
    /// 0 pass, 1 fail, 2 could not be judged.
    pub fn exit_code(&self) -> i32 {
        match self.verdict.judged {
            Judged::Pass => 0,
            Judged::Fail => 1,
            Judged::Unjudged => 2,
        }
    }

    /// The results folder: `config.json`, `verdict.json`, `report.md`, `load.json`,
    /// `placements.jsonl` (every order request and its answer), `run.svg` (the
    /// picture: answers, p99 and errors per second, the faults shaded).
    pub fn write(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.folder)
            .with_context(|| format!("creating {}", self.folder.display()))?;
        let write = |name: &str, text: String| {
            let path = self.folder.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
        };
        write(
            "config.json",
            serde_json::to_string_pretty(&serde_json::json!({
                "scenario": self.scenario,
                "config": self.config,
                "faults": self.faults,
            }))? + "\n",
        )?;
        write("verdict.json", serde_json::to_string_pretty(&self)? + "\n")?;
        write(
            "load.json",
            serde_json::to_string_pretty(&self.load)? + "\n",
        )?;
        let mut lines = String::new();
        for placement in &self.load.placements {
            lines += &serde_json::to_string(placement)?;
            lines.push('\n');
        }
        write("placements.jsonl", lines)?;
        write("report.md", self.report())?;
        picture::draw(
            &self.folder.join("run.svg"),
            &format!(
                "{} — {:.0} requests/s, seed {} — {}",
                self.scenario.name(),
                self.config.rate,
                self.config.seed,
                self.verdict.judged.word()
            ),
            &self.load,
            &self.faults,
            &self.samples,
        )?;
        Ok(())
    }

    /// A short report, in Markdown.
    pub fn report(&self) -> String {
        let v = &self.verdict;
        let mut out = format!(
            "# {} — {}\n\n**Hypothesis.** {}\n\n**Defence.** {}{}\n\n\
             {:.0} requests/s for {:.0} s, seed {}.\n\n| fault | from–to | time to recover |\n|---|---:|---:|\n",
            self.scenario.name(),
            v.judged.word(),
            self.hypothesis,
            self.defence,
            self.defence_off.map_or(String::new(), |instead| format!(
                " — **switched off for this run**: {instead}"
            )),
            self.config.rate,
            self.config.duration.as_secs_f64(),
            self.config.seed,
        );
        for (fault, recovery) in self.faults.iter().zip(&v.recoveries) {
            out += &format!(
                "| {} | {:.1}–{:.1} s | {} |\n",
                fault.name(),
                fault.at_ms as f64 / 1000.0,
                fault.end_ms() as f64 / 1000.0,
                recovery
                    .time_to_recover_s
                    .map_or("not recovered".to_owned(), |s| format!("{s:.0} s"))
            );
        }
        out += &format!(
            "\n| | |\n|---|---|\n| orders accepted | {} |\n| final | {} |\n| lost | {} |\n\
             | answered 5xx or no answer (maybe) | {} |\n| orders stored twice | {} |\n\
             | p99 before the faults | {:.0} ms |\n| p99 during | {:.0} ms |\n| p99 after | {:.0} ms |\n\
             | restarts of processes not hit | {} |\n| consumer lag before the faults, at most | {} |\n\n## Rules\n\n",
            v.accepted,
            v.final_orders,
            v.lost,
            v.maybe,
            v.duplicates,
            v.p99_before_ms,
            v.p99_during_ms,
            v.p99_after_ms,
            v.bystander_restarts,
            v.lag_baseline.map_or("-".to_owned(), |l| l.to_string()),
        );
        for rule in &v.rules {
            out += &format!(
                "- {} **{}** — {}\n",
                if rule.pass { "✔" } else { "✘" },
                rule.name,
                rule.detail
            );
        }
        out
    }
}

/// Runs one scenario: platform, load, faults, drain, verdict, results folder.
pub async fn run(args: &ScenarioArgs, scenario: Scenario) -> anyhow::Result<Outcome> {
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
    let run_id = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
    // A game day does not say which scenario it runs until it is over.
    let shown = if args.gameday.is_some() {
        "gameday"
    } else {
        scenario.name()
    };
    let folder = args.runs.join(format!("{stamp}-{shown}"));
    let faults = scenario.schedule(args.duration, args.seed);
    eprintln!(
        "chaos: {shown} — starting a platform of its own (results in {})",
        folder.display()
    );
    let platform = Platform::start(args, scenario, &run_id).await?;
    let result = drive(args, &platform, faults).await;
    let stopped = platform.stop(args.keep).await;
    let (load, verdict, faults, samples) = result?;
    if let Err(err) = stopped {
        eprintln!("chaos: stopping the platform: {err:#}");
    }
    let outcome = Outcome {
        scenario,
        hypothesis: scenario.hypothesis(),
        defence: scenario.defence().0,
        defence_off: args.no_defence.then_some(scenario.defence().1),
        config: args.clone(),
        faults,
        verdict,
        load,
        samples,
        folder,
    };
    outcome.write()?;
    Ok(outcome)
}

/// The load, the faults at their moments, the drain, the verdict.
async fn drive(
    args: &ScenarioArgs,
    platform: &Platform,
    mut faults: Vec<Fault>,
) -> anyhow::Result<(LoadReport, Verdict, Vec<Fault>, Vec<watch::Sample>)> {
    let (orders_db, inventory_db) = platform.books().await?;
    let initial_stock = books::stock(&inventory_db).await?;
    let live = Live::default();
    let live_stop = CancellationToken::new();
    let live_task = live
        .serve(
            platform.layout.chaos_ops(),
            orders_db.clone(),
            live_stop.clone(),
        )
        .await?;
    let load_args = |duration: Duration| -> anyhow::Result<LoadArgs> {
        Ok(crate::parse_flags(&[
            "--url",
            &format!("http://{}", platform.layout.gateway()),
            "--rate",
            &args.rate.to_string(),
            "--duration",
            &format!("{}ms", duration.as_millis()),
            "--seed",
            &args.seed.to_string(),
            "--customers",
            "2000",
            "--timeout",
            "5s",
        ])?)
    };
    if !args.warmup.is_zero() {
        eprintln!(
            "chaos: warming up ({:?} at {}/s, not judged)…",
            args.warmup, args.rate
        );
        run::run(&load_args(args.warmup)?).await?;
    }
    let load_args = load_args(args.duration)?;
    eprintln!("chaos: the run ({:?} at {}/s)…", args.duration, args.rate);
    let load = tokio::spawn(async move { run::run(&load_args).await });
    // The load's clock starts 50 ms after it is called (`run::run`).
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let started = chrono::Utc::now() + chrono::Duration::milliseconds(50);
    let topics = phase2_events::flow::Topics::new(&platform.settings.namespace);
    let watch = watch::Watch::start(
        &platform.settings.brokers,
        &topics,
        platform.provider.simulator.clone(),
        start,
        live.lag.clone(),
    )?;
    for fault in &mut faults {
        tokio::time::sleep_until(start + Duration::from_millis(fault.at_ms)).await;
        let hidden = args.gameday.is_some();
        if let Some(path) = &args.gameday {
            let mut record = gameday::Record::load(path)?;
            if record.fault_at.is_none() {
                record.fault_at = Some(common::db::timestamp(common::db::now()));
                record.save(path)?;
            }
        }
        let shown = live.showing(fault, hidden);
        let injected = platform.inject(fault).await;
        shown();
        match injected {
            Ok(_) if hidden => eprintln!(
                "chaos: {:>5.1} s  something happened — what?",
                fault.at_ms as f64 / 1000.0
            ),
            Ok(done) => eprintln!("chaos: {:>5.1} s  {done}", fault.at_ms as f64 / 1000.0),
            Err(err) => eprintln!("chaos: could not inject {}: {err:#}", fault.name()),
        }
        fault.ended_ms = Some(start.elapsed().as_millis() as u64);
    }
    let load = load.await.context("the load generator panicked")??;
    let samples = watch.finish().await;
    eprintln!(
        "chaos: load done ({} requests); holding the books to what clients were told (up to {:?})…",
        load.totals.sent, args.drain
    );
    let accepted = verdict::accepted(&load);
    let deadline = Instant::now() + args.drain;
    let notifications_key = Some(
        phase2_events::services::notification::Keys::new(&phase2_events::flow::Topics::new(
            &platform.settings.namespace,
        ))
        .sent(),
    );
    let (problems, report) = loop {
        let books = Books {
            settings: &platform.settings,
            orders_db: &orders_db,
            inventory_db: &inventory_db,
            ledger: platform.provider.simulator.ledger(),
            notifications_key: notifications_key.clone(),
        };
        let (problems, report) = books::inspect(&books, &accepted, &initial_stock).await?;
        if problems.is_empty() || Instant::now() > deadline {
            break (problems, report);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let stored = verdict::stored(&orders_db).await?;
    let restarts: BTreeMap<String, u64> = platform
        .supervisor
        .processes()
        .into_iter()
        .map(|p| (p.name, p.restarts))
        .collect();
    let retries = watch::retries(
        &faults,
        &samples,
        args.recovery_target,
        started,
        &platform.settings.brokers,
        &topics,
        &platform.provider.simulator.ledger(),
    )
    .await
    .context("counting the retries")?;
    let finishing = watch::finishing(&faults, started, &orders_db).await?;
    let verdict = Verdict::judge(&verdict::Evidence {
        load: &load,
        faults: &faults,
        problems: &problems,
        books: &report,
        stored: &stored,
        restarts: &restarts,
        slo_p99_ms: args.slo_p99.as_secs_f64() * 1000.0,
        recovery_target_s: args.recovery_target.as_secs_f64(),
        samples: &samples,
        retries: &retries,
        finishing: &finishing,
    });
    live_stop.cancel();
    let _ = live_task.await;
    orders_db.close().await;
    inventory_db.close().await;
    Ok((load, verdict, faults, samples))
}

/// What `--all` prints: one row per scenario.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| scenario | accepted | lost | duplicates | maybe | slowest recovery | p99 during | p99 after | verdict |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for o in outcomes {
        let v = &o.verdict;
        let slowest = v
            .recoveries
            .iter()
            .map(|r| r.time_to_recover_s)
            .try_fold(0.0_f64, |worst, r| r.map(|s| worst.max(s)));
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} ms | {:.0} ms | {} |\n",
            o.scenario.name(),
            v.accepted,
            v.lost,
            v.duplicates,
            v.maybe,
            slowest.map_or("never".to_owned(), |s| format!("{s:.0} s")),
            v.p99_during_ms,
            v.p99_after_ms,
            v.judged.word()
        );
    }
    out
}
