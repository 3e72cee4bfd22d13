//! Apache Kafka as a [`Service`], and `cargo xtask broker restart | kill | start`.
//!
//! The services talk to Kafka through rdkafka, so any Kafka broker on
//! [`DEFAULT_BROKERS`] will do (`KAFKA_BROKERS` points them elsewhere): Apache Kafka
//! from `phase2-events/compose.yaml` for those with Docker, or — what `cargo xtask up`
//! runs natively — **Apache Kafka itself, from Maven Central's jars on the JVM**:
//!
//! * **install** (once): Java 17+ and Maven must be on `PATH` (installed with apt as
//!   root on Debian/Ubuntu); `mvn dependency:copy-dependencies` on
//!   `xtask/kafka/pom.xml` puts the jars of [`local_kafka::VERSION`] in
//!   `.ferriseats/kafka/<version>/lib`. Later runs need no network.
//! * **start**: [`local_kafka::Cluster`] writes each node's `server.properties` (every
//!   setting explained there), formats its storage the first time only, and xtask
//!   starts `java … kafka.Kafka` detached ([`process::spawn_detached`]), writing the
//!   pid down for `down` and for the `broker` commands. One KRaft node (broker and
//!   controller in one process) on 9092; with `--brokers 3` three of them on
//!   9092–9094, whose topics keep 3 copies with `min.insync.replicas=2`.
//! * **ready** means the node answers a `Metadata` request listing itself (and, for a
//!   cluster, all three): then it has joined the controller quorum and clients can
//!   produce. [`local_kafka::probe`] writes that request by hand, so `up` needs no
//!   Kafka client library.
//!
//! Storage lives under `.ferriseats/kafka/single-node/` (or `three-nodes/`): a
//! broker that is killed and started again finds its log where it left it, and `down`
//! keeps it. Each node logs to `server.log` in its own directory there.
//!
//! `cargo xtask broker restart [--down-for 5s]` is the fault the chaos scenarios
//! inject: SIGKILL (a crash — no shutdown code runs), an optional outage, and a start
//! on the same storage. `broker kill N` / `broker start N` do it to one node of the
//! three (phase 4's "lose a node under load").

use crate::doctor::Machine;
use crate::process::{self, Privilege};
use crate::services::{self, Service, Started, State, Stop};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use common_local::endpoints;
use common_local::local_kafka::{self, Cluster, Runtime, probe};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The bootstrap servers the services and tests use when `KAFKA_BROKERS` is not set.
pub const DEFAULT_BROKERS: &str = endpoints::KAFKA.default;
/// Points the services and tests at other brokers (`host:port[,host:port…]`).
pub const ENV_BROKERS: &str = endpoints::KAFKA.env;
const NAME: &str = endpoints::KAFKA.name;
const PORT: u16 = local_kafka::BASE_PORT;
/// What `ps` calls a Kafka node: the JVM.
const PROGRAM: &str = "java";
/// How long a freshly started node may take to join its cluster.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a node may take to shut down cleanly on SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(30);
/// The Debian packages that provide what Kafka needs.
const JAVA_PACKAGE: &str = "openjdk-17-jre-headless";
const MAVEN_PACKAGE: &str = "maven";

/// Every node of the local cluster: what clients should bootstrap from when any node
/// may be down (with only 127.0.0.1:9092, a client that starts while node 1 is down
/// finds no broker, though the cluster is up).
pub const CLUSTER_BROKERS: &str = "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094";

pub const SERVICE: Service = services::service! {
    name: NAME, port: PORT, env_override: ENV_BROKERS, default_url: DEFAULT_BROKERS,
    local_urls: &[CLUSTER_BROKERS],
};

/// How many nodes `up` starts (`--brokers`): 1 unless told otherwise.
static NODES: AtomicU32 = AtomicU32::new(1);

/// `cargo xtask up --brokers N` sets this before the services come up.
pub fn set_nodes(nodes: u32) -> anyhow::Result<()> {
    // Checked here, before anything starts: 1 or 3.
    Cluster::standard(PathBuf::new(), nodes)?;
    NODES.store(nodes, Ordering::Relaxed);
    Ok(())
}

/// The shared broker of `nodes` nodes: its ports and where it keeps its storage.
fn cluster(nodes: u32) -> Cluster {
    let dir = if nodes == 1 {
        "single-node"
    } else {
        "three-nodes"
    };
    Cluster::standard(local_kafka::home().join(dir), nodes)
        .expect("1 or 3 nodes (checked by set_nodes)")
}

/// The cluster xtask started, from the pids it wrote down: one pid per node.
fn started_cluster(state: &State) -> Option<(Cluster, Vec<u32>)> {
    match &state.find(NAME)?.stop {
        Stop::Process { pid, .. } => Some((cluster(1), vec![*pid])),
        Stop::Processes { pids, .. } => Some((cluster(pids.len() as u32), pids.clone())),
        Stop::Command(_) => None,
    }
}

/// Up means: 127.0.0.1:9092 answers Metadata listing at least one broker.
fn is_up() -> bool {
    probe::metadata(DEFAULT_BROKERS, local_kafka::PROBE_TIMEOUT)
        .is_ok_and(|view| !view.brokers.is_empty())
}

/// Kafka's jars are in `.ferriseats/kafka/<version>/lib` and a Java 17 or newer is
/// found (an older one is for [`install`] to replace).
fn installed() -> bool {
    local_kafka::installed(&local_kafka::lib_dir())
        && lacking(&Machine::from_env(), false).is_empty()
}

/// What the local Kafka needs from the machine and does not find there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lack {
    /// No `java` in `$JAVA_HOME/bin` or on `PATH`.
    Java,
    /// A `java` older than [`local_kafka::MIN_JAVA`] (`None`: it does not say).
    OldJava { java: PathBuf, major: Option<u32> },
    /// No `mvn` on `PATH`: needed once, to fetch Kafka's jars.
    Maven,
}

/// The `java` Kafka would run on `machine`: `$JAVA_HOME/bin/java`, else the first on
/// its `PATH`.
pub fn java_on(machine: &Machine) -> Option<PathBuf> {
    local_kafka::java_in(machine.java_home.as_deref(), Some(&machine.path))
}

/// What `machine` lacks to run Kafka, and to fetch its jars when `need_maven`.
pub fn lacking(machine: &Machine, need_maven: bool) -> Vec<Lack> {
    let mut lacks = Vec::new();
    match java_on(machine) {
        None => lacks.push(Lack::Java),
        Some(java) => match local_kafka::java_major(&java) {
            Some(major) if major >= local_kafka::MIN_JAVA => {}
            major => lacks.push(Lack::OldJava { java, major }),
        },
    }
    if need_maven && machine.find("mvn").is_none() {
        lacks.push(Lack::Maven);
    }
    lacks
}

/// The Debian packages that bring what `lacks` names.
fn packages(lacks: &[Lack]) -> Vec<&'static str> {
    let java = lacks.iter().any(|lack| *lack != Lack::Maven);
    let maven = lacks.contains(&Lack::Maven);
    [(java, JAVA_PACKAGE), (maven, MAVEN_PACKAGE)]
        .into_iter()
        .filter_map(|(needed, package)| needed.then_some(package))
        .collect()
}

/// The one line for `lacks` (not empty): what Kafka needs, what is wrong, and the
/// command that fixes it. `attempt`: how installing it ourselves failed.
pub fn lack_line(lacks: &[Lack], machine: &Machine, attempt: Option<&str>) -> String {
    let java = lacks.iter().any(|lack| *lack != Lack::Maven);
    let maven = lacks.contains(&Lack::Maven);
    let needs = match (java, maven) {
        (true, true) => "Java 17 or newer and Maven",
        (true, false) => "Java 17 or newer",
        _ => "Maven (once, to fetch its jars from Maven Central)",
    };
    let problems: Vec<String> = lacks
        .iter()
        .map(|lack| match lack {
            Lack::Java => "there is no `java` on PATH (or in $JAVA_HOME/bin)".to_owned(),
            Lack::OldJava {
                java,
                major: Some(major),
            } => format!("{} is Java {major}", java.display()),
            Lack::OldJava { java, major: None } => {
                format!("{} does not say which Java it is", java.display())
            }
            Lack::Maven => "there is no `mvn` on PATH".to_owned(),
        })
        .collect();
    let mut fix = machine.install_command(&packages(lacks), needs);
    if lacks
        .iter()
        .any(|lack| matches!(lack, Lack::OldJava { .. }))
    {
        fix += " (or point JAVA_HOME at a Java 17 or newer)";
    }
    let attempt = attempt.map(|why| format!(" ({why})")).unwrap_or_default();
    format!(
        "Apache Kafka needs {needs}, and {}{attempt}: {fix}, then `cargo xtask up` again",
        problems.join(" and ")
    )
}

fn start(_privilege: Privilege) -> anyhow::Result<Option<Stop>> {
    if !installed() {
        return Ok(None); // not installed: `up` installs, then calls us again
    }
    // Installed: anything still wrong (a Java too old) is an error to show.
    let runtime = Runtime::find()?;
    let nodes = NODES.load(Ordering::Relaxed);
    let cluster = cluster(nodes);
    let started = Instant::now();
    let mut children = Vec::new();
    // Every node at once: none is ready before a majority of the controllers is up.
    for node in &cluster.nodes {
        children.push((node.id, launch(&cluster, &runtime, node.id)?));
    }
    let ready = wait_ready(&cluster, &mut children, 1, true);
    if let Err(err) = ready {
        for (_, child) in &children {
            let _ = process::kill(child.id(), PROGRAM);
        }
        return Err(err);
    }
    let pids: Vec<u32> = children.iter().map(|(_, child)| child.id()).collect();
    println!(
        "kafka: Apache Kafka {} ({} node{}, pid{} {}) answers Metadata on {} after {:.1} s",
        local_kafka::VERSION,
        nodes,
        if nodes == 1 { "" } else { "s" },
        if nodes == 1 { "" } else { "s" },
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        cluster.bootstrap(),
        started.elapsed().as_secs_f64()
    );
    Ok(Some(stop_of(pids)))
}

/// Writes node `id`'s configuration (formatting its storage the first time) and
/// starts it detached; its stdout and stderr (a JVM crash report, say) go to
/// `.ferriseats/logs/kafka-node-<id>.log`, its own log to `server.log` beside its data.
fn launch(cluster: &Cluster, runtime: &Runtime, id: u32) -> anyhow::Result<std::process::Child> {
    let cmd = cluster.prepare(runtime, id)?;
    process::spawn_detached(&cmd, &stdout_log(id))
}

fn stdout_log(id: u32) -> PathBuf {
    services::log_path(NAME, &format!("node-{id}"))
}

/// Waits until node `probe_node` answers Metadata (listing every node when `all`);
/// fails with the end of the logs if a node exits or time runs out.
fn wait_ready(
    cluster: &Cluster,
    children: &mut [(u32, std::process::Child)],
    probe_node: u32,
    all: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        for (id, child) in children.iter_mut() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "Kafka node {id} exited at once ({status}); end of {}:\n{}\n\
                     end of {}:\n{}",
                    cluster.log_file(*id).display(),
                    process::tail(&cluster.log_file(*id), 20),
                    stdout_log(*id).display(),
                    process::tail(&stdout_log(*id), 10)
                );
            }
        }
        if cluster.is_ready(probe_node, all) {
            return Ok(());
        }
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "Kafka node {probe_node} did not answer Metadata within {START_TIMEOUT:?}, so it \
                 was stopped again; end of {}:\n{}",
                cluster.log_file(probe_node).display(),
                process::tail(&cluster.log_file(probe_node), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Java and Maven (apt, as root, on Debian/Ubuntu), then the jars from Maven Central.
/// What cannot be installed here ends in one line saying what to run
/// ([`process::Fix`]).
fn install(privilege: Privilege) -> anyhow::Result<()> {
    let machine = Machine::from_env();
    let jars = local_kafka::installed(&local_kafka::lib_dir());
    if !lacking(&machine, !jars).is_empty() {
        let mut attempt = None;
        if privilege != Privilege::User && machine.find("apt-get").is_some() {
            for package in packages(&lacking(&machine, !jars)) {
                println!("kafka: installing Debian's {package} (Apache Kafka needs it)");
                if let Err(err) = process::apt_install(privilege, package) {
                    let why = format!("{err:#}");
                    attempt = Some(format!(
                        "installing {package} failed: {}",
                        why.split_whitespace().collect::<Vec<_>>().join(" ")
                    ));
                    break;
                }
            }
        }
        let lacks = lacking(&machine, !jars);
        if !lacks.is_empty() {
            return Err(process::Fix(lack_line(&lacks, &machine, attempt.as_deref())).into());
        }
    }
    if jars {
        return Ok(());
    }
    let lib = local_kafka::lib_dir();
    let partial = lib.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    println!(
        "kafka: fetching Apache Kafka {} from Maven Central into {} (once; about 45 MB)",
        local_kafka::VERSION,
        lib.display()
    );
    let pom = process::workspace_root().join("xtask/kafka/pom.xml");
    let mut mvn = Command::new("mvn");
    mvn.args(["-B", "-q", "-Dstyle.color=never", "-f"])
        .arg(&pom)
        .arg("dependency:copy-dependencies")
        .arg(format!("-DoutputDirectory={}", partial.display()));
    println!("$ {}", process::display(&mvn));
    let started = Instant::now();
    // Quiet unless it fails: then all of Maven's output, which says what it could not get.
    let out = process::output(&mut mvn, Duration::from_secs(20 * 60))?;
    if !out.status.success() {
        bail!(
            "fetching Kafka's jars with Maven failed ({}); is Maven Central reachable?\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Renamed only once complete, so an interrupted download is never taken for an
    // installation.
    let _ = std::fs::remove_dir_all(&lib);
    std::fs::rename(&partial, &lib)
        .with_context(|| format!("moving the jars to {}", lib.display()))?;
    if !local_kafka::installed(&lib) {
        bail!(
            "Maven finished but {} holds no kafka_2.13-{}.jar",
            lib.display(),
            local_kafka::VERSION
        );
    }
    println!(
        "kafka: {} jars in {:.1} s",
        std::fs::read_dir(&lib)?.count(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A broker answers: say what it is, and refuse a single node when three were asked for.
fn prepare(_started_here: Option<Privilege>) -> anyhow::Result<()> {
    let view = probe::metadata(DEFAULT_BROKERS, local_kafka::PROBE_TIMEOUT)?;
    let wanted = NODES.load(Ordering::Relaxed) as usize;
    if view.brokers.len() < wanted {
        bail!(
            "{} broker{} answer{} on {DEFAULT_BROKERS}, but --brokers {wanted} was asked for: \
             stop {} first (`cargo xtask down`, if xtask started it), then run \
             `cargo xtask up --brokers {wanted}` again",
            view.brokers.len(),
            if view.brokers.len() == 1 { "" } else { "s" },
            if view.brokers.len() == 1 { "s" } else { "" },
            if view.brokers.len() == 1 {
                "it"
            } else {
                "them"
            },
        );
    }
    println!(
        "kafka: Metadata answered at {DEFAULT_BROKERS}: {} broker{} ({}), controller {}",
        view.brokers.len(),
        if view.brokers.len() == 1 { "" } else { "s" },
        view.brokers
            .iter()
            .map(|b| format!("{} on {}:{}", b.node_id, b.host, b.port))
            .collect::<Vec<_>>()
            .join(", "),
        view.controller_id
    );
    if view.brokers.len() >= 3 && services::url(&SERVICE) != CLUSTER_BROKERS {
        println!(
            "kafka: clients bootstrap from {DEFAULT_BROKERS} unless told otherwise; so that one \
             started while node 1 is down still finds the cluster:\n\
             \x20   export {ENV_BROKERS}={CLUSTER_BROKERS}"
        );
    }
    Ok(())
}

/// Checks `brokers` answer, for `status`.
pub fn check_url(brokers: &str) -> anyhow::Result<()> {
    local_kafka::check_brokers(brokers)
}

/// For `status`: which Kafka, how many nodes, where its storage and logs are.
fn details() -> Option<String> {
    let state = State::load().ok()?;
    let (cluster, pids) = started_cluster(&state)?;
    let alive: Vec<String> = cluster
        .nodes
        .iter()
        .zip(&pids)
        .map(|(node, pid)| {
            let up = if process::running(*pid, PROGRAM) {
                "up"
            } else {
                "down"
            };
            format!("node {} :{} {up}", node.id, node.port)
        })
        .collect();
    Some(format!(
        "Apache Kafka {} (KRaft), {}; storage and server.log in {}",
        local_kafka::VERSION,
        alive.join(", "),
        cluster.root.display()
    ))
}

fn manual() -> String {
    format!(
        "Apache Kafka is needed on {DEFAULT_BROKERS}. Either:\n\
         \x20 natively (what `cargo xtask up` does as root on Debian/Ubuntu):\n\
         \x20   sudo apt-get install -y {JAVA_PACKAGE} {MAVEN_PACKAGE}   # Java 17+ and Maven\n\
         \x20   cargo xtask up                                              # fetches Kafka {version} from Maven Central once\n\
         \x20 Docker (Apache Kafka, with PostgreSQL and Redis):\n\
         \x20   docker compose -f phase2-events/compose.yaml up -d --wait\n\
         \x20 or brokers elsewhere:\n\
         \x20   export {ENV_BROKERS}=HOST:PORT[,HOST:PORT…]\n\
         then run `cargo xtask up` again.",
        version = local_kafka::VERSION
    )
}

#[derive(Debug, Args)]
pub struct BrokerArgs {
    #[command(subcommand)]
    action: BrokerAction,
}

#[derive(Debug, Subcommand)]
enum BrokerAction {
    /// Crash the broker that `cargo xtask up` started (SIGKILL, every node) and start
    /// it again on the same storage; returns once it answers. For chaos scenarios.
    Restart {
        /// How long the broker stays down between the kill and the start, e.g. 5s.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        down_for: Duration,
    },
    /// SIGKILL one node (1, 2 or 3) of the cluster `cargo xtask up --brokers 3` started.
    Kill {
        /// The node's id (its port is 9091 + id).
        node: u32,
    },
    /// Start a node that was killed again, on its storage; returns once it has rejoined.
    Start {
        /// The node's id (its port is 9091 + id).
        node: u32,
    },
}

pub fn run(args: &BrokerArgs) -> anyhow::Result<()> {
    if let Some(brokers) = services::override_url(&SERVICE) {
        bail!(
            "{ENV_BROKERS}={brokers} is set: that broker is not xtask's to restart \
             (unset it to use the local one)"
        );
    }
    let mut state = State::load()?;
    let Some((cluster, pids)) = started_cluster(&state) else {
        if is_up() {
            bail!(
                "the broker on {DEFAULT_BROKERS} was not started by `cargo xtask up`, so xtask \
                 cannot restart it: restart it yourself, or stop it and run `cargo xtask up`"
            );
        }
        bail!("no broker is running on {DEFAULT_BROKERS}: start one with `cargo xtask up`");
    };
    let runtime = Runtime::find()?;
    match args.action {
        BrokerAction::Restart { down_for } => {
            restart(&mut state, &cluster, &runtime, pids, down_for)
        }
        BrokerAction::Kill { node } => {
            cluster.node(node)?;
            let pid = pids[node as usize - 1];
            if process::kill(pid, PROGRAM)? {
                println!("kafka: killed node {node} (pid {pid}) with SIGKILL");
            } else {
                println!("kafka: node {node} (pid {pid}) was not running");
            }
            Ok(())
        }
        BrokerAction::Start { node } => {
            cluster.node(node)?;
            let old = pids[node as usize - 1];
            if process::running(old, PROGRAM) {
                println!("kafka: node {node} is already running (pid {old})");
                return Ok(());
            }
            let started = Instant::now();
            let mut children = vec![(node, launch(&cluster, &runtime, node)?)];
            wait_ready(&cluster, &mut children, node, false)?;
            let mut pids = pids;
            pids[node as usize - 1] = children[0].1.id();
            record(&mut state, pids)?;
            println!(
                "kafka: node {node} rejoined after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}

/// How `down` stops the nodes with these pids (one per node).
fn stop_of(pids: Vec<u32>) -> Stop {
    let program = PROGRAM.to_owned();
    match pids[..] {
        [pid] => Stop::Process { pid, program },
        _ => Stop::Processes { pids, program },
    }
}

/// Writes the pids of the nodes down, as `up` does.
fn record(state: &mut State, pids: Vec<u32>) -> anyhow::Result<()> {
    state.record(Started {
        name: NAME.to_owned(),
        address: DEFAULT_BROKERS.to_owned(),
        stop: stop_of(pids),
    })
}

/// `cargo xtask broker restart`: see the module docs.
fn restart(
    state: &mut State,
    cluster: &Cluster,
    runtime: &Runtime,
    pids: Vec<u32>,
    down_for: Duration,
) -> anyhow::Result<()> {
    let killed_at = Instant::now();
    for (node, pid) in cluster.nodes.iter().zip(&pids) {
        if process::kill(*pid, PROGRAM)? {
            println!("kafka: killed node {} (pid {pid}) with SIGKILL", node.id);
        } else {
            println!("kafka: node {} (pid {pid}) was not running", node.id);
        }
    }
    if !down_for.is_zero() {
        println!("kafka: staying down for {down_for:?}");
        std::thread::sleep(down_for);
    }
    let mut children = Vec::new();
    for node in &cluster.nodes {
        children.push((node.id, launch(cluster, runtime, node.id)?));
    }
    wait_ready(cluster, &mut children, 1, true).inspect_err(|_| {
        // The old pids are gone; keep no stale entry for `down` to chase.
        let _ = state.forget(NAME);
    })?;
    let new: Vec<u32> = children.iter().map(|(_, c)| c.id()).collect();
    println!(
        "kafka: restarted as pid{} {}; unavailable for {:.1} s in all",
        if new.len() == 1 { "" } else { "s" },
        new.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        killed_at.elapsed().as_secs_f64()
    );
    record(state, new)
}
