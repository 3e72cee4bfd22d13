//! [`LocalCluster`]: Kafka nodes of a test's own.
//!
//! Most tests share the broker `cargo xtask up` started, each with topics and groups
//! of its own. A test whose *fault* is the broker — killed and restarted, cut off
//! behind a proxy, one node of three lost — would hit every other test running at
//! the same moment, so it starts nodes of its own: the same jars and configuration
//! as the shared broker ([`Cluster`]), on free ports, with storage in a temporary
//! directory that is removed when the value is dropped. The nodes are children of
//! the test process and are SIGKILLed on drop.

use super::{Cluster, Runtime};
use anyhow::{Context, bail};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to join (a JVM starting on a busy 2-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Kafka nodes of this process's own; see the module docs.
#[derive(Debug)]
pub struct LocalCluster {
    cluster: Cluster,
    runtime: Runtime,
    /// The running node of each `node.id` (index `id - 1`); `None` while killed.
    children: Vec<Option<Child>>,
}

/// What [`LocalCluster::start_with`] starts.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// 1 or 3.
    pub nodes: usize,
    /// Copies of each partition (default: one per node).
    pub replicas: Option<usize>,
    /// A second listener on node 1, reached through a proxy (see `Node::faultable`).
    pub faultable: Option<(u16, SocketAddr)>,
}

/// A port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalCluster {
    /// `nodes` (1 or 3) nodes on free ports, started and ready.
    pub fn start(nodes: usize) -> anyhow::Result<LocalCluster> {
        LocalCluster::start_with(Options {
            nodes,
            ..Options::default()
        })
    }

    /// Nodes as `options` say, started and ready.
    pub fn start_with(options: Options) -> anyhow::Result<LocalCluster> {
        let mut ports = Vec::new();
        for _ in 0..options.nodes {
            ports.push((free_port()?, free_port()?));
        }
        LocalCluster::start_on(&ports, None, |cluster| {
            cluster.replicas = options.replicas;
            cluster.nodes[0].faultable = options.faultable;
        })
    }

    /// One node on `port` that tells clients to connect to `advertised` (a fault
    /// proxy that forwards to `port`), started and ready.
    pub fn start_behind(port: u16, advertised: SocketAddr) -> anyhow::Result<LocalCluster> {
        LocalCluster::start_on(&[(port, free_port()?)], Some(advertised), |_| {})
    }

    fn start_on(
        ports: &[(u16, u16)],
        advertised: Option<SocketAddr>,
        configure: impl FnOnce(&mut Cluster),
    ) -> anyhow::Result<LocalCluster> {
        let runtime = Runtime::find()?;
        let root: PathBuf =
            std::env::temp_dir().join(format!("ferriseats-kafka-{}", super::random_id()));
        let mut cluster = Cluster::on_ports(root, ports)?;
        // Tests start several of these at once: a smaller heap is plenty.
        cluster.heap_mib = 384;
        if let Some(addr) = advertised {
            cluster.nodes[0].advertised = Some(addr);
        }
        configure(&mut cluster);
        let mut local = LocalCluster {
            children: cluster.nodes.iter().map(|_| None).collect(),
            cluster,
            runtime,
        };
        // All at once: no node is ready before a majority of controllers is up.
        let ids: Vec<u32> = local.cluster.nodes.iter().map(|n| n.id).collect();
        for &id in &ids {
            local.spawn(id)?;
        }
        for &id in &ids {
            local.wait_ready(id, true)?;
        }
        Ok(local)
    }

    /// `bootstrap.servers` for clients (the advertised addresses).
    pub fn brokers(&self) -> String {
        self.cluster.bootstrap()
    }

    /// The configuration the nodes run with.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn spawn(&mut self, id: u32) -> anyhow::Result<()> {
        let mut cmd = self.cluster.prepare(&self.runtime, id)?;
        let out = crate::process::append_log(&self.cluster.node_dir(id).join("stdout.log"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting Kafka node {id}"))?;
        self.children[id as usize - 1] = Some(child);
        Ok(())
    }

    /// Waits until node `id` answers Metadata listing itself (and, with `all`, every
    /// node).
    fn wait_ready(&mut self, id: u32, all: bool) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.children[id as usize - 1].as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "Kafka node {id} exited ({status}); end of {}:\n{}",
                    self.cluster.log_file(id).display(),
                    tail(&self.cluster.log_file(id), 20)
                );
            }
            if self.cluster.is_ready(id, all) {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "Kafka node {id} did not answer Metadata within {START_TIMEOUT:?}; end of {}:\n{}",
                    self.cluster.log_file(id).display(),
                    tail(&self.cluster.log_file(id), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL node `id`: no shutdown code runs, as in a crash or a lost machine.
    pub fn kill(&mut self, id: u32) {
        if let Some(mut child) = self
            .children
            .get_mut(id as usize - 1)
            .and_then(Option::take)
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `id` again on its storage and waits until it has rejoined.
    pub fn start_node(&mut self, id: u32) -> anyhow::Result<()> {
        self.cluster.node(id)?;
        if self.children[id as usize - 1].is_none() {
            self.spawn(id)?;
        }
        self.wait_ready(id, false)
    }

    /// SIGKILL every node, then start them all again on the same storage.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let ids: Vec<u32> = self.cluster.nodes.iter().map(|n| n.id).collect();
        for &id in &ids {
            self.kill(id);
        }
        for &id in &ids {
            self.spawn(id)?;
        }
        for &id in &ids {
            self.wait_ready(id, true)?;
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for id in 1..=self.children.len() as u32 {
            self.kill(id);
        }
        let _ = std::fs::remove_dir_all(&self.cluster.root);
    }
}

/// The last `lines` lines of a log file, for error messages.
fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
