//! Apache Kafka on this machine, without Docker: the jars from Maven Central run on
//! the JVM, one KRaft node or a cluster of three.
//!
//! `cargo xtask up` installs the jars (`xtask/kafka/pom.xml`, into
//! `.ferriseats/kafka/<VERSION>/lib`) and runs the shared broker on 127.0.0.1:9092
//! (three nodes on 9092–9094 with `--brokers 3`). The tests whose fault must not hit
//! that shared broker — a broker killed and restarted, a network fault between the
//! services and the broker, a node of three lost — start their own with
//! [`LocalCluster`], from the same jars and the same configuration. Everything a node
//! is told lives in [`Cluster::properties`], each setting with its reason.
//!
//! KRaft mode: every node is both a broker (clients talk to it on `port`) and a
//! controller (the nodes elect a leader among themselves on `controller_port`, and
//! that leader keeps the cluster's metadata: topics, partitions, who leads which).
//! No ZooKeeper. A node's storage is formatted once with the cluster's id; after
//! that, a node killed and started again finds its log and its metadata where it left
//! them, so a restart loses nothing.
//!
//! | file | what it holds |
//! |---|---|
//! | this one | the pinned version, where the jars and `java` are, a cluster's configuration, formatting, the command line |
//! | [`probe`] | `ApiVersions` and `Metadata` written by hand: is it Kafka, is it ready |
//! | [`cluster`] | [`LocalCluster`]: nodes of a test's own, on free ports, killed and started at will |

pub mod cluster;
pub mod probe;
pub mod topics;

pub use cluster::LocalCluster;

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The Apache Kafka release every node runs. The same version is in
/// `xtask/kafka/pom.xml` (which fetches it) and in the compose files' image tags.
pub const VERSION: &str = "4.3.2";

/// `.ferriseats/kafka`: the jars of each version, and the shared broker's storage.
pub fn home() -> PathBuf {
    crate::process::workspace_root()
        .join(".ferriseats")
        .join("kafka")
}

/// Where `cargo xtask up` puts the jars of [`VERSION`].
pub fn lib_dir() -> PathBuf {
    home().join(VERSION).join("lib")
}

/// Are the jars of [`VERSION`] installed? (`kafka_2.13-<VERSION>.jar` is the broker.)
pub fn installed(lib: &Path) -> bool {
    lib.join(format!("kafka_2.13-{VERSION}.jar")).is_file()
}

/// The `java` to run: `$JAVA_HOME/bin/java`, else the first on `$PATH`.
pub fn java() -> Option<PathBuf> {
    java_in(
        std::env::var_os("JAVA_HOME").as_deref(),
        std::env::var_os("PATH").as_deref(),
    )
}

/// [`java`] with `JAVA_HOME` and `PATH` given (`cargo xtask doctor`'s tests look on a
/// `PATH` of their own).
pub fn java_in(
    java_home: Option<&std::ffi::OsStr>,
    path: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    let from_home = java_home
        .filter(|home| !home.is_empty())
        .map(|home| PathBuf::from(home).join("bin").join("java"))
        .filter(|path| path.is_file());
    from_home.or_else(|| {
        std::env::split_paths(path?)
            .map(|dir| dir.join("java"))
            .find(|path| path.is_file())
    })
}

/// The jars and the JVM, checked: what every node is started with.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub java: PathBuf,
    pub lib: PathBuf,
}

impl Runtime {
    /// The installed jars of [`VERSION`] and a `java`, or an error that says how to
    /// get them.
    pub fn find() -> anyhow::Result<Runtime> {
        let lib = lib_dir();
        if !installed(&lib) {
            bail!(
                "Apache Kafka {VERSION} is not installed in {}: `cargo xtask up` installs it \
                 (from Maven Central, once)",
                lib.display()
            );
        }
        let java = java().context(
            "no `java` on PATH (or in $JAVA_HOME/bin): Apache Kafka needs Java 17 or newer; \
             `cargo xtask up` installs it on Debian/Ubuntu as root",
        )?;
        match java_major(&java) {
            Some(major) if major >= MIN_JAVA => {}
            Some(major) => bail!(
                "{} is Java {major}, and Apache Kafka {VERSION} needs Java {MIN_JAVA} or newer: \
                 set JAVA_HOME to a newer JDK (e.g. Debian's openjdk-17-jre-headless)",
                java.display()
            ),
            None => bail!(
                "{} does not say which Java it is (`-version`)",
                java.display()
            ),
        }
        Ok(Runtime { java, lib })
    }
}

/// The oldest Java the Kafka 4 broker runs on.
pub const MIN_JAVA: u32 = 17;

/// The major version `java -version` reports: `openjdk version "17.0.15"` is 17
/// (and the old scheme's `"1.8.0_392"` is 8).
pub fn java_major(java: &Path) -> Option<u32> {
    let out = Command::new(java).arg("-version").output().ok()?;
    parse_java_major(&String::from_utf8_lossy(&out.stderr))
}

fn parse_java_major(version_text: &str) -> Option<u32> {
    let quoted = version_text.split('"').nth(1)?;
    let mut parts = quoted.split(['.', '-', '_', '+']);
    let first: u32 = parts.next()?.parse().ok()?;
    if first == 1 {
        parts.next()?.parse().ok()
    } else {
        Some(first)
    }
}

/// One node of a [`Cluster`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// `node.id`: 1, 2, 3.
    pub id: u32,
    /// Where clients (and the other brokers, for replication) connect.
    pub port: u16,
    /// Where the controllers talk to each other (the KRaft quorum).
    pub controller_port: u16,
    /// What the node tells clients to connect to, when that is not 127.0.0.1:`port`:
    /// a fault proxy in front of it, so that every connection a client opens after
    /// bootstrapping goes through the proxy too.
    pub advertised: Option<SocketAddr>,
    /// A second listener, `FAULTABLE` on `(port, advertised)`: a client that
    /// bootstraps at `advertised` (a fault proxy forwarding to `port`) is told to
    /// dial it again, so all its traffic crosses the proxy, while every other client
    /// keeps the direct listener. One process can then be cut off from the broker
    /// without the others.
    pub faultable: Option<(u16, SocketAddr)>,
}

impl Node {
    /// The address clients are told to use.
    pub fn advertised(&self) -> SocketAddr {
        self.advertised
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], self.port)))
    }
}

/// A local KRaft cluster of one or three nodes: where each keeps its storage and how
/// each is configured.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// `<root>/node-<id>/` holds each node's configuration, data and log;
    /// `<root>/cluster-id` the id its storage was formatted with.
    pub root: PathBuf,
    pub nodes: Vec<Node>,
    /// `-Xmx` of each node's JVM.
    pub heap_mib: u32,
    /// Copies of each partition, when not one per node (up to 3): `Some(1)` on three
    /// nodes shows what replication is for.
    pub replicas: Option<usize>,
}

/// The shared broker's client ports: 9092, then 9093 and 9094 for a cluster.
pub const BASE_PORT: u16 = 9092;
/// Controller ports are the client port plus this (19092…): 9093 and 9094 are
/// client ports of the three-node cluster, so the controllers keep clear of them.
pub const CONTROLLER_OFFSET: u16 = 10_000;
/// Heap of each node: Kafka's own start script uses 1 GiB; a workshop's topics fit
/// in far less, and three nodes must share a laptop.
pub const HEAP_MIB: u32 = 512;

impl Cluster {
    /// `nodes` nodes on the standard ports (9092…, controllers 19092…), storage under
    /// `root`.
    pub fn standard(root: PathBuf, nodes: u32) -> anyhow::Result<Cluster> {
        let ports: Vec<(u16, u16)> = (0..nodes as u16)
            .map(|i| (BASE_PORT + i, BASE_PORT + i + CONTROLLER_OFFSET))
            .collect();
        Cluster::on_ports(root, &ports)
    }

    /// Nodes 1, 2, … on these (client, controller) ports.
    pub fn on_ports(root: PathBuf, ports: &[(u16, u16)]) -> anyhow::Result<Cluster> {
        if ![1, 3].contains(&ports.len()) {
            bail!(
                "a local Kafka cluster has 1 or 3 nodes, not {}: with 2, losing either \
                 node loses the controller quorum (a majority of 2 is 2)",
                ports.len()
            );
        }
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, &(port, controller_port))| Node {
                id: i as u32 + 1,
                port,
                controller_port,
                advertised: None,
                faultable: None,
            })
            .collect();
        Ok(Cluster {
            root,
            nodes,
            heap_mib: HEAP_MIB,
            replicas: None,
        })
    }

    /// The node with this `node.id`.
    pub fn node(&self, id: u32) -> anyhow::Result<&Node> {
        self.nodes.iter().find(|n| n.id == id).with_context(|| {
            format!(
                "there is no node {id}: the cluster has nodes 1 to {}",
                self.nodes.len()
            )
        })
    }

    /// `bootstrap.servers` for clients: every node's advertised address.
    pub fn bootstrap(&self) -> String {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.advertised().to_string())
            .collect();
        addrs.join(",")
    }

    /// How many copies of each partition a topic keeps: 1 on a single node, 3 on a
    /// cluster.
    pub fn replication_factor(&self) -> usize {
        self.replicas
            .unwrap_or(self.nodes.len())
            .min(self.nodes.len())
    }

    /// `min.insync.replicas`: with 3 copies, a write acknowledged with `acks=all` is
    /// on at least 2 nodes, so losing any one node loses no acknowledged write, and
    /// the partition still accepts writes with one node down.
    pub fn min_insync_replicas(&self) -> usize {
        if self.replication_factor() >= 3 { 2 } else { 1 }
    }

    /// `broker.session.timeout.ms`: a dead node's partitions stand still this long
    /// before their leadership moves. Kafka's 9 s on one node (there is nowhere to move
    /// it); 4 s on three, where failing over is the lesson — still four heartbeats, so
    /// a node busy for a second is not fenced.
    pub fn session_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(if self.nodes.len() >= 3 { 4000 } else { 9000 })
    }

    pub fn node_dir(&self, id: u32) -> PathBuf {
        self.root.join(format!("node-{id}"))
    }

    /// The node's own log file (log4j's): the first place to look when it misbehaves.
    pub fn log_file(&self, id: u32) -> PathBuf {
        self.node_dir(id).join("server.log")
    }

    fn properties_file(&self, id: u32) -> PathBuf {
        self.node_dir(id).join("server.properties")
    }

    fn log4j_file(&self, id: u32) -> PathBuf {
        self.node_dir(id).join("log4j2.properties")
    }

    /// `server.properties` of node `id`.
    pub fn properties(&self, id: u32) -> anyhow::Result<String> {
        let node = self.node(id)?;
        let voters: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
            .collect();
        let data = self.node_dir(id).join("data");
        let replicas = self.replication_factor();
        let min_isr = self.min_insync_replicas();
        Ok(format!(
            "# Written by FerrisEats (common/local/src/local_kafka/mod.rs) at every start: edit that file, not this one.\n\
             # One node of a local KRaft cluster of {count}, Apache Kafka {VERSION}.\n\
             \n\
             # Broker and controller in one process: no ZooKeeper, no separate controller nodes.\n\
             process.roles=broker,controller\n\
             node.id={id}\n\
             # The controllers, fixed (a static quorum): each node votes for the metadata leader.\n\
             controller.quorum.voters={voters}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}{faultable_listener}\n\
             # What clients are told to dial after bootstrapping (a proxy, in the network-fault tests).\n\
             advertised.listeners=PLAINTEXT://{advertised}{faultable_advertised}\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT{faultable_map}\n\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=PLAINTEXT\n\
             log.dirs={data}\n\
             \n\
             # Topics are created on purpose, with their partition count (part of the lesson), never by a\n\
             # typo in a consumer; a topic created without a replication factor gets every node's copy.\n\
             auto.create.topics.enable=false\n\
             num.partitions=3\n\
             default.replication.factor={replicas}\n\
             min.insync.replicas={min_isr}\n\
             offsets.topic.replication.factor={replicas}\n\
             offsets.topic.num.partitions=10\n\
             transaction.state.log.replication.factor={replicas}\n\
             transaction.state.log.min.isr={min_isr}\n\
             share.coordinator.state.topic.replication.factor={replicas}\n\
             share.coordinator.state.topic.min.isr={min_isr}\n\
             \n\
             # How long the controller waits for a silent node before it fences it and moves its\n\
             # partitions' leadership to the other copies (Kafka's default, 9 s, on three nodes).\n\
             broker.session.timeout.ms={session_ms}\n\
             broker.heartbeat.interval.ms={heartbeat_ms}\n\
             \n\
             # A new consumer group starts at once: Kafka's default waits 3 s for more members to join,\n\
             # which every test and every `cargo run` would pay.\n\
             group.initial.rebalance.delay.ms=0\n\
             \n\
             # Two cores: a thread pool per core, not Kafka's server-sized defaults (8 I/O, 3 network).\n\
             num.io.threads=2\n\
             num.network.threads=2\n\
             num.replica.fetchers=1\n\
             background.threads=4\n\
             log.cleaner.threads=1\n\
             \n\
             # Retention: a day of messages, in segments of 64 MiB, and a day of a gone group's offsets, so\n\
             # what tests and benchmarks leave behind is cleaned up instead of piling up run after run.\n\
             log.retention.ms=86400000\n\
             log.segment.bytes=67108864\n\
             log.retention.check.interval.ms=300000\n\
             offsets.retention.minutes=1440\n",
            count = self.nodes.len(),
            voters = voters.join(","),
            port = node.port,
            controller_port = node.controller_port,
            advertised = node.advertised(),
            faultable_listener = node.faultable.map_or(String::new(), |(port, _)| format!(
                ",FAULTABLE://127.0.0.1:{port}"
            )),
            faultable_advertised = node
                .faultable
                .map_or(String::new(), |(_, addr)| format!(",FAULTABLE://{addr}")),
            faultable_map = if node.faultable.is_some() {
                ",FAULTABLE:PLAINTEXT"
            } else {
                ""
            },
            session_ms = self.session_timeout().as_millis(),
            heartbeat_ms = self.session_timeout().as_millis() / 4,
            data = data.display(),
        ))
    }

    /// log4j's configuration for node `id`: one rolling file, INFO (what Kafka's
    /// release logs), 3 × 20 MiB at most.
    fn log4j(&self, id: u32) -> String {
        let log = self.log_file(id);
        format!(
            "# Written by FerrisEats (common/local/src/local_kafka/mod.rs).\n\
             status = warn\n\
             appender.file.type = RollingFile\n\
             appender.file.name = file\n\
             appender.file.fileName = {log}\n\
             appender.file.filePattern = {log}.%i\n\
             appender.file.layout.type = PatternLayout\n\
             appender.file.layout.pattern = [%d] %p %m (%c)%n\n\
             appender.file.policies.type = Policies\n\
             appender.file.policies.size.type = SizeBasedTriggeringPolicy\n\
             appender.file.policies.size.size = 20MB\n\
             appender.file.strategy.type = DefaultRolloverStrategy\n\
             appender.file.strategy.max = 3\n\
             rootLogger.level = INFO\n\
             rootLogger.appenderRef.file.ref = file\n\
             # One line per request above a threshold would drown the rest.\n\
             logger.request.name = kafka.request.logger\n\
             logger.request.level = WARN\n",
            log = log.display()
        )
    }

    /// The id the cluster's storage is formatted with: made once and kept in
    /// `<root>/cluster-id`, so every node (and every later start) uses the same.
    fn cluster_id(&self) -> anyhow::Result<String> {
        let path = self.root.join("cluster-id");
        match std::fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        }
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating {}", self.root.display()))?;
        let id = random_id();
        std::fs::write(&path, format!("{id}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(id)
    }

    /// Writes node `id`'s configuration and, the first time only, formats its storage.
    /// Returns the command that runs the node (in the foreground: the caller decides
    /// whether it is a child or a detached server).
    pub fn prepare(&self, runtime: &Runtime, id: u32) -> anyhow::Result<Command> {
        let dir = self.node_dir(id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let properties = self.properties_file(id);
        std::fs::write(&properties, self.properties(id)?)
            .with_context(|| format!("writing {}", properties.display()))?;
        std::fs::write(self.log4j_file(id), self.log4j(id))?;
        let formatted = dir.join("data").join("meta.properties");
        if !formatted.is_file() {
            let cluster_id = self.cluster_id()?;
            let mut format = self.java(runtime, id);
            format
                .arg("kafka.tools.StorageTool")
                .args(["format", "--ignore-formatted", "-t", &cluster_id, "-c"])
                .arg(&properties);
            let out = format
                .stdin(std::process::Stdio::null())
                .output()
                .with_context(|| format!("running {}", runtime.java.display()))?;
            if !out.status.success() {
                bail!(
                    "formatting the storage of Kafka node {id} failed ({}):\n{}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let mut run = self.java(runtime, id);
        run.args([
            format!("-Xmx{}m", self.heap_mib),
            format!("-Xms{}m", self.heap_mib / 2),
        ])
        // What Kafka's own kafka-run-class.sh passes: G1 with short pauses.
        .args([
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
        ])
        .arg("kafka.Kafka")
        .arg(&properties);
        Ok(run)
    }

    /// `java -cp '<lib>/*' -Dlog4j2…` for node `id`; the main class follows.
    fn java(&self, runtime: &Runtime, id: u32) -> Command {
        let mut cmd = Command::new(&runtime.java);
        // `java` expands a trailing `*` in a classpath entry itself: every jar there.
        cmd.arg("-cp")
            .arg(format!("{}/*", runtime.lib.display()))
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.log4j_file(id).display()
            ))
            .arg(format!("-Dkafka.logs.dir={}", self.node_dir(id).display()));
        cmd
    }

    /// Has node `id` joined: does it answer `Metadata` listing itself, and (when
    /// `all`) every other node too?
    pub fn is_ready(&self, id: u32, all: bool) -> bool {
        let Ok(node) = self.node(id) else {
            return false;
        };
        let addr = format!("127.0.0.1:{}", node.port);
        match probe::metadata(&addr, PROBE_TIMEOUT) {
            Ok(view) => {
                let listed = |id: u32| view.brokers.iter().any(|b| b.node_id == id as i32);
                if all {
                    self.nodes.iter().all(|n| listed(n.id))
                } else {
                    listed(id)
                }
            }
            Err(_) => false,
        }
    }
}

/// How long one readiness probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Does at least one of the comma-separated `host:port` brokers answer ApiVersions?
/// (A client needs only one to bootstrap; the others are reported.)
pub fn check_brokers(brokers: &str) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    let mut answered = 0;
    for broker in brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        // Clients accept `PLAINTEXT://host:port` as well as `host:port`.
        let addr = broker.rsplit("://").next().unwrap_or(broker);
        match probe::api_versions(addr, PROBE_TIMEOUT) {
            Ok(_) => answered += 1,
            Err(err) => errors.push(format!("{broker}: {err:#}")),
        }
    }
    if answered == 0 {
        if errors.is_empty() {
            bail!(
                "{} lists no broker (expected host:port[,host:port…])",
                crate::endpoints::KAFKA.env
            );
        }
        bail!("no broker answers ApiVersions:\n  {}", errors.join("\n  "));
    }
    for error in errors {
        eprintln!("kafka: warning: {error}");
    }
    Ok(())
}

/// 16 random bytes in Kafka's cluster-id form (URL-safe base64, no padding), from
/// the standard library alone: every `RandomState` is seeded from the operating
/// system's randomness (and each later one in a process differs), which is plenty
/// for naming a cluster or a scratch directory.
pub(crate) fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut bytes = [0u8; 16];
    for half in bytes.chunks_mut(8) {
        let mut hasher = std::hash::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    base64url(&bytes)
}

/// Base64url without padding: the form of a Kafka cluster id (22 characters for
/// 16 bytes).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_id_is_22_characters_of_base64url() {
        assert_eq!(base64url(&[0xfb, 0xff, 0xbf]), "-_-_");
        assert_eq!(base64url(&[0; 16]).len(), 22);
        assert_eq!(base64url(b"Man"), "TWFu");
        assert_eq!(base64url(b"Ma"), "TWE");
    }

    #[test]
    fn a_single_node_keeps_one_copy_and_a_cluster_three() {
        let single = Cluster::standard("/tmp/x".into(), 1).unwrap();
        let text = single.properties(1).unwrap();
        assert!(text.contains("controller.quorum.voters=1@127.0.0.1:19092\n"));
        assert!(
            text.contains("listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:19092\n")
        );
        assert!(text.contains("default.replication.factor=1\n"));
        assert!(text.contains("min.insync.replicas=1\n"));
        assert!(text.contains("group.initial.rebalance.delay.ms=0\n"));
        assert_eq!(single.bootstrap(), "127.0.0.1:9092");

        let three = Cluster::standard("/tmp/x".into(), 3).unwrap();
        let text = three.properties(2).unwrap();
        assert!(text.contains("node.id=2\n"));
        assert!(text.contains(
            "controller.quorum.voters=1@127.0.0.1:19092,2@127.0.0.1:19093,3@127.0.0.1:19094\n"
        ));
        assert!(text.contains("advertised.listeners=PLAINTEXT://127.0.0.1:9093\n"));
        assert!(text.contains("default.replication.factor=3\n"));
        assert!(text.contains("offsets.topic.replication.factor=3\n"));
        assert!(text.contains("min.insync.replicas=2\n"));
        assert_eq!(
            three.bootstrap(),
            "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094"
        );
        assert!(three.node(4).is_err());
    }

    #[test]
    fn the_java_version_is_read_in_both_schemes() {
        let modern = "openjdk version \"17.0.15\" 2025-04-15\nOpenJDK Runtime Environment";
        assert_eq!(parse_java_major(modern), Some(17));
        assert_eq!(
            parse_java_major("openjdk version \"25\" 2025-09-16"),
            Some(25)
        );
        assert_eq!(parse_java_major("java version \"1.8.0_392\""), Some(8));
        assert_eq!(parse_java_major("no quotes here"), None);
    }

    #[test]
    fn two_nodes_are_refused() {
        let err = Cluster::standard("/tmp/x".into(), 2).unwrap_err();
        assert!(format!("{err:#}").contains("quorum"), "{err:#}");
    }

    #[test]
    fn every_setting_is_a_key_kafka_knows_once() {
        // A typo in a key is silently ignored by Kafka: at least catch duplicates and
        // malformed lines.
        let text = Cluster::standard("/tmp/x".into(), 3)
            .unwrap()
            .properties(1)
            .unwrap();
        let mut keys = std::collections::BTreeSet::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (key, value) = line.split_once('=').expect("key=value");
            assert!(!value.is_empty(), "{key} has no value");
            assert!(keys.insert(key), "{key} set twice");
        }
    }

    #[test]
    fn the_pom_pins_the_same_version() {
        let pom =
            std::fs::read_to_string(crate::process::workspace_root().join("xtask/kafka/pom.xml"))
                .unwrap();
        assert!(
            pom.contains(&format!("<kafka.version>{VERSION}</kafka.version>")),
            "xtask/kafka/pom.xml must pin Kafka {VERSION}"
        );
    }
}
