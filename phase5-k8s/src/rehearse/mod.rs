//! `phase5-k8s rehearse SCENARIO`: what the manifests make happen, shown with real
//! processes on this machine — no cluster needed.
//!
//! The rehearsal renders the manifests (the base, and the misconfiguration overlay a
//! scenario is about), reads what a kubelet would act on ([`manifest`]), and runs each
//! pod as a process of the image's binary in a control group with the manifest's
//! limits ([`cgroup`]), probed at the manifest's intervals and restarted the way a
//! kubelet restarts ([`kubelet`]), behind a Service that routes only to ready pods,
//! with the endpoints' propagation delay of a real cluster ([`service`]). PostgreSQL,
//! Kafka and Redis are this machine's (`cargo xtask up`), each run on databases and
//! topics of its own.
//!
//! | scenario | what it shows | where |
//! |---|---|---|
//! | `cpu-starved` | the same load under the base CPU limit and a starved one: p99, throttled periods, tokio workers | [`scenarios::cpu_starved`] |
//! | `memory-tight` | a limit below what the service holds: OOMKilled (137), restarted, in a crash loop | [`scenarios::memory_tight`] |
//! | `liveness-on-database` | a database outage restarts every replica whose liveness checks it, none of the others | [`scenarios::liveness_on_database`] |
//! | `termination-during-traffic` | a rolling restart under load with and without `preStop`: failed requests; offsets committed, the group left | [`scenarios::termination_during_traffic`] |
//! | `autoscaling` | the HPA's formula on live CPU and lag, applied; replicas beyond the partitions sit idle | [`scenarios::autoscaling`] |
//! | `pod-killer` | a random replica killed again and again under load: time to recover | [`scenarios::pod_killer`] |
//!
//! Each ends in a verdict: the checks that say the lesson happened, each with its
//! figures (exit status 0 when all pass), and `--json FILE` for the figures.

pub mod cgroup;
pub mod kubelet;
pub mod manifest;
pub mod scenarios;
pub mod service;

use crate::policy::{self, Object};
use anyhow::Context;
use kubelet::{Deployment, Node};
use manifest::Template;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A rehearsal scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    CpuStarved,
    MemoryTight,
    LivenessOnDatabase,
    TerminationDuringTraffic,
    Autoscaling,
    PodKiller,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::CpuStarved,
        Scenario::MemoryTight,
        Scenario::LivenessOnDatabase,
        Scenario::TerminationDuringTraffic,
        Scenario::Autoscaling,
        Scenario::PodKiller,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::CpuStarved => "cpu-starved",
            Scenario::MemoryTight => "memory-tight",
            Scenario::LivenessOnDatabase => "liveness-on-database",
            Scenario::TerminationDuringTraffic => "termination-during-traffic",
            Scenario::Autoscaling => "autoscaling",
            Scenario::PodKiller => "pod-killer",
        }
    }

    /// The misconfiguration overlay it sets beside the base (none for `pod-killer`).
    pub fn overlay(self) -> Option<&'static str> {
        match self {
            Scenario::CpuStarved => Some("cpu-starved"),
            Scenario::MemoryTight => Some("memory-tight"),
            Scenario::LivenessOnDatabase => Some("liveness-on-database"),
            Scenario::TerminationDuringTraffic => Some("no-prestop"),
            Scenario::Autoscaling => Some("consumers-over-partitions"),
            Scenario::PodKiller => None,
        }
    }
}

/// `phase5-k8s rehearse`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct RehearseArgs {
    #[arg(value_enum, required_unless_present = "all")]
    pub scenario: Option<Scenario>,
    /// Every scenario, one after another, and a table of their verdicts.
    #[arg(long, conflicts_with = "scenario")]
    pub all: bool,
    /// Orders per second sent through the Service (default: the scenario's).
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long the load of each measured run lasts (default: the scenario's).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// How late the Services learn that a pod left or joined the endpoints (a real
    /// cluster: from a fraction of a second to several seconds).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub endpoint_lag: Duration,
    /// `pod-killer`: pods killed, one after another.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// The image's binary (default: `phase4-chaos` of a release build, built if needed).
    #[arg(long, env = "FERRISEATS_BINARY")]
    pub binary: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where the pods' logs go (`<dir>/<run>/<pod>.log`).
    #[arg(long, default_value = ".ferriseats/rehearsals")]
    pub runs: PathBuf,
    /// The seed of random choices (which pod the pod killer takes).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl RehearseArgs {
    /// The scenarios these flags ask for.
    pub fn scenarios(&self) -> Vec<Scenario> {
        match self.scenario {
            Some(scenario) if !self.all => vec![scenario],
            _ => Scenario::ALL.to_vec(),
        }
    }

    /// The flags for `scenario` with every default (how tests start one).
    pub fn new(scenario: Scenario) -> RehearseArgs {
        RehearseArgs {
            scenario: Some(scenario),
            all: false,
            rate: None,
            duration: None,
            endpoint_lag: Duration::from_secs(2),
            rounds: 5,
            binary: None,
            json: None,
            runs: common_local::process::workspace_root().join(".ferriseats/rehearsals"),
            seed: 1,
        }
    }
}

/// One thing the scenario must show, and whether it did.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub passed: bool,
    /// The figures it was judged on.
    pub figures: String,
}

/// What a scenario printed, and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    /// The side-by-side table.
    pub table: String,
    pub checks: Vec<Check>,
    /// Every figure, for `--json` and the book.
    pub figures: serde_json::Value,
    /// Where the pods' logs are.
    pub logs: PathBuf,
}

impl Report {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    pub fn print(&self) -> String {
        let mut out = format!("rehearsal {}\n\n{}\n", self.scenario.name(), self.table);
        for check in &self.checks {
            out.push_str(&format!(
                "  {} {} — {}\n",
                if check.passed { "✔" } else { "✘" },
                check.what,
                check.figures
            ));
        }
        out.push_str(&format!(
            "\nverdict: {} (pods' logs: {})\n",
            if self.passed() { "PASS" } else { "FAIL" },
            self.logs.display()
        ));
        out
    }
}

fn check(what: impl Into<String>, passed: bool, figures: impl Into<String>) -> Check {
    Check {
        what: what.into(),
        passed,
        figures: figures.into(),
    }
}

/// The rendered objects of the base, or of `phase5-k8s/deploy/overlays/misconfig/NAME`.
pub fn objects(overlay: Option<&str>) -> anyhow::Result<Vec<Object>> {
    let deploy = common_local::process::workspace_root().join("phase5-k8s/deploy");
    let dir = match overlay {
        Some(name) => deploy.join("overlays/misconfig").join(name),
        None => deploy.join("base"),
    };
    policy::parse(&crate::render(&dir)?)
}

/// The local stand-in for a cluster: this machine's PostgreSQL, Kafka and Redis
/// (databases and topics of this run's own), the payment provider simulator (a
/// third party, in this process), and the kubelet's node.
#[derive(Debug)]
pub struct Cluster {
    pub brokers: String,
    pub admin_url: String,
    /// The kubelet's node of the current variant ([`Cluster::variant`]).
    node: std::sync::Mutex<Arc<Node>>,
    /// Every variant's, to drop at the end (a variant named twice is one set).
    namespaces: std::sync::Mutex<std::collections::BTreeSet<String>>,
    databases: std::sync::Mutex<std::collections::BTreeSet<String>>,
    provider: Option<phase4_chaos::system::RunningProvider>,
    deployments: std::sync::Mutex<Vec<Arc<Deployment>>>,
}

/// The settings in the manifests' ConfigMap and Secret that name cluster addresses,
/// and what they are here; the rest of the manifest's environment is kept.
const DATABASES: [(&str, &str); 4] = [
    ("ORDER_DATABASE_URL", "orders"),
    ("PAYMENT_DATABASE_URL", "payments"),
    ("INVENTORY_DATABASE_URL", "inventory"),
    ("DELIVERY_DATABASE_URL", "delivery"),
];

impl Cluster {
    pub async fn start(args: &RehearseArgs, scenario: Scenario) -> anyhow::Result<Cluster> {
        let version = cgroup::Cgroup::check()?;
        let admin_url = common_local::endpoints::POSTGRES.url();
        let brokers = common_local::endpoints::KAFKA.url();
        {
            let admin_url = admin_url.clone();
            tokio::task::spawn_blocking(move || common_local::psql::check_url(&admin_url))
                .await?
                .context(
                    "PostgreSQL is needed for the rehearsal: start it with `cargo xtask up`",
                )?;
        }
        {
            let brokers = brokers.clone();
            tokio::task::spawn_blocking(move || phase2_events::kafka::topic_names(&brokers))
                .await?
                .context("Kafka is needed for the rehearsal: start it with `cargo xtask up`")?;
        }
        let run_id = format!(
            "{}{:04x}",
            chrono::Utc::now().format("%H%M%S"),
            std::process::id() & 0xffff
        );
        let binary = match &args.binary {
            Some(binary) => binary.clone(),
            None => {
                eprintln!("rehearsal: building the image's binary (phase4-chaos, release)…");
                tokio::task::spawn_blocking(common_local::process::build_bench_packages).await??;
                common_local::process::target_dir().join("release/phase4-chaos")
            }
        };
        anyhow::ensure!(
            binary.exists(),
            "the image's binary {} does not exist",
            binary.display()
        );
        let provider_addr = std::net::SocketAddr::from((
            [127, 0, 0, 1],
            common_local::local_kafka::cluster::free_port()?,
        ));
        let provider = phase4_chaos::system::RunningProvider::start(provider_addr).await?;
        let mut env = BTreeMap::new();
        env.insert("KAFKA_BROKERS".to_owned(), brokers.clone());
        env.insert("REDIS_URL".to_owned(), common_local::endpoints::REDIS.url());
        env.insert("PAYMENT_URL".to_owned(), format!("http://{provider_addr}"));
        let logs = args.runs.join(format!("{}-{run_id}", scenario.name()));
        let node = Node::new(binary, logs, env, run_id)?;
        eprintln!(
            "rehearsal: cgroup v{version}; pods' logs in {}",
            node.logs.display()
        );
        let cluster = Cluster {
            brokers,
            admin_url,
            node: std::sync::Mutex::new(Arc::new(node)),
            namespaces: std::sync::Mutex::default(),
            databases: std::sync::Mutex::default(),
            provider: Some(provider),
            deployments: std::sync::Mutex::default(),
        };
        cluster.variant("base")?;
        Ok(cluster)
    }

    /// From now on, pods get databases and topics of their own, named after `label`:
    /// the base and a misconfiguration run side by side without sharing a backlog,
    /// a consumer group's offsets or an outbox.
    pub fn variant(&self, label: &str) -> anyhow::Result<()> {
        let mut node = self.node.lock().expect("node");
        let suffix = label.replace('-', "_");
        let mut env = node.env.clone();
        for (key, name) in DATABASES {
            let database = format!("ferriseats_rehearse_{}_{suffix}_{name}", node.run_id);
            env.insert(
                key.to_owned(),
                common_local::endpoints::with_database(&self.admin_url, &database),
            );
            self.databases.lock().expect("databases").insert(database);
        }
        let namespace = format!("rehearse-{}-{label}", node.run_id);
        env.insert("TOPIC_NAMESPACE".to_owned(), namespace.clone());
        self.namespaces
            .lock()
            .expect("namespaces")
            .insert(namespace);
        *node = Arc::new(Node::new(
            node.binary.clone(),
            node.logs.clone(),
            env,
            node.run_id.clone(),
        )?);
        Ok(())
    }

    /// The current variant's node.
    pub fn node(&self) -> Arc<Node> {
        self.node.lock().expect("node").clone()
    }

    /// The current variant's topic namespace.
    pub fn namespace(&self) -> String {
        self.node().env["TOPIC_NAMESPACE"].clone()
    }

    /// A Deployment of `template`, renamed `name` (two of the same Deployment side
    /// by side keep their pods apart), with `replicas` pods.
    pub fn deploy(
        &self,
        mut template: Template,
        name: &str,
        replicas: usize,
    ) -> anyhow::Result<Arc<Deployment>> {
        template.deployment = name.to_owned();
        let deployment = Deployment::new(self.node(), template);
        deployment.scale(replicas)?;
        self.deployments
            .lock()
            .expect("deployments")
            .push(deployment.clone());
        Ok(deployment)
    }

    /// A topic or consumer group of this run (`orders` → `rehearse-….orders`).
    pub fn topic(&self, name: &str) -> String {
        format!("{}.{name}", self.namespace())
    }

    /// A consumer group of this run (`payment-service` → `rehearse-….payment-service`).
    pub fn namespaced(&self, name: &str) -> String {
        self.topic(name)
    }

    /// Every pod deleted, the provider stopped, the databases and topics dropped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let deployments: Vec<_> = self
            .deployments
            .lock()
            .expect("deployments")
            .drain(..)
            .collect();
        futures::future::join_all(deployments.iter().map(|d| d.delete())).await;
        if let Some(provider) = self.provider.take() {
            provider.stop().await?;
        }
        let admin_url = self.admin_url.clone();
        let databases = self.databases.lock().expect("databases").clone();
        tokio::task::spawn_blocking(move || {
            for name in databases {
                let _ = common_local::psql::execute(
                    &admin_url,
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                );
            }
        })
        .await?;
        let namespaces = self.namespaces.lock().expect("namespaces").clone();
        for namespace in namespaces {
            let _ = phase2_events::kafka::delete_namespace(&self.brokers, &namespace).await;
        }
        Ok(())
    }
}

/// Runs `scenario` and returns its report (written to `--json` if asked: one report,
/// or an array of them with `--all`).
pub async fn run(args: &RehearseArgs, scenario: Scenario) -> anyhow::Result<Report> {
    let cluster = Cluster::start(args, scenario).await?;
    let logs = cluster.node().logs.clone();
    let result = scenarios::run(args, scenario, &cluster).await;
    cluster.stop().await?;
    let mut report = result?;
    report.logs = logs;
    Ok(report)
}

/// Runs every scenario `args` asks for, printing each report as it ends; writes
/// `--json`. Returns the reports.
pub async fn run_all(args: &RehearseArgs) -> anyhow::Result<Vec<Report>> {
    let mut reports = Vec::new();
    for scenario in args.scenarios() {
        let report = run(args, scenario).await?;
        print!("{}", report.print());
        reports.push(report);
    }
    if reports.len() > 1 {
        println!("\n| scenario | verdict |\n|---|---|");
        for report in &reports {
            println!(
                "| {} | {} |",
                report.scenario.name(),
                if report.passed() { "PASS" } else { "FAIL" }
            );
        }
    }
    if let Some(path) = &args.json {
        let json = match reports.as_slice() {
            [one] => serde_json::to_string_pretty(one)?,
            all => serde_json::to_string_pretty(all)?,
        };
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(reports)
}
