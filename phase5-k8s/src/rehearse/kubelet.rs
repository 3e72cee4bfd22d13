//! A kubelet and a ReplicaSet controller, small enough to read: pods are processes,
//! each in a control group with the manifest's limits, probed at the manifest's
//! intervals, restarted when they die or fail their liveness probe, and terminated
//! the way Kubernetes terminates them.
//!
//! | Kubernetes | here |
//! |---|---|
//! | a container in its cgroup, with its limits | [`Pod::run`], [`super::cgroup`] |
//! | liveness: `failureThreshold` failures in a row restart the container | [`Pod::probe`] |
//! | readiness: out of the Service's endpoints until it succeeds | [`Pod::probe`], [`Pod::is_endpoint`] |
//! | restart with `CrashLoopBackOff`: at once, then 10 s, 20 s … 5 min | [`crash_loop_delay`] |
//! | termination: endpoints dropped, `preStop`, SIGTERM, SIGKILL at the grace period | [`Pod::terminate`] |
//! | a ReplicaSet: replace a deleted pod at once; a rolling update with `maxSurge`/`maxUnavailable` | [`Deployment`] |
//!
//! A pod's ports are the container's ports moved to free ports of 127.0.0.1 (every
//! `0.0.0.0:PORT` in its arguments is rewritten), as if each pod had its own IP.

use super::cgroup::{Cgroup, Limits, Usage};
use super::manifest::{Probe, Template};
use anyhow::Context;
use common::shutdown::CancellationToken;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The delay before the `n`th restart in a row (counting from 0): Kubernetes
/// restarts a container that died at once, then backs off — 10 s, 20 s, 40 s … up
/// to 5 minutes (`CrashLoopBackOff`) — and forgets after 10 minutes up.
pub fn crash_loop_delay(n: u32) -> Duration {
    match n {
        0 => Duration::ZERO,
        n => Duration::from_secs(10u64.saturating_mul(1 << (n - 1).min(5)).min(300)),
    }
}

/// Up this long, a container's next death restarts it at once again.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// Why a container stopped, in Kubernetes' words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Reason {
    /// It exited with status 0.
    Completed,
    /// It exited with another status, or a signal other than an OOM kill.
    Error,
    /// The kernel killed it for crossing its memory limit (exit 137).
    #[serde(rename = "OOMKilled")]
    OomKilled,
    /// The kubelet stopped it: its liveness probe failed.
    LivenessProbeFailed,
    /// The pod was deleted (a rollout, a scale-down, a pod killer).
    Deleted,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Completed => "Completed",
            Reason::Error => "Error",
            Reason::OomKilled => "OOMKilled",
            Reason::LivenessProbeFailed => "liveness probe failed",
            Reason::Deleted => "deleted",
        })
    }
}

/// How one run of a container ended.
#[derive(Debug, Clone, Serialize)]
pub struct Exit {
    /// Since the rehearsal began.
    pub at_ms: u64,
    /// The shell's way of writing it: the exit code, or 128 + the signal.
    pub code: i32,
    pub reason: Reason,
    /// SIGKILLed at the end of the grace period (the drain was cut short).
    pub killed_after_grace: bool,
}

#[derive(Debug, Default)]
struct Status {
    ready: bool,
    terminating: bool,
    gone: bool,
    restarts: u32,
    exits: Vec<Exit>,
}

/// What every pod of a rehearsal shares: the image's binary, where logs go, the
/// settings that replace the cluster's addresses with this machine's.
#[derive(Debug)]
pub struct Node {
    /// The image's entrypoint: the `phase4-chaos` binary.
    pub binary: PathBuf,
    pub logs: PathBuf,
    /// Set over the manifest's environment (addresses of this machine's Kafka,
    /// PostgreSQL, Redis and provider; this run's databases and topics).
    pub env: BTreeMap<String, String>,
    pub epoch: Instant,
    pub run_id: String,
    http: reqwest::Client,
}

impl Node {
    pub fn new(
        binary: PathBuf,
        logs: PathBuf,
        env: BTreeMap<String, String>,
        run_id: String,
    ) -> anyhow::Result<Node> {
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        Ok(Node {
            binary,
            logs,
            env,
            epoch: Instant::now(),
            run_id,
            http: reqwest::Client::builder().no_proxy().build()?,
        })
    }

    /// Milliseconds since the rehearsal began.
    pub fn ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// A pod: one container, kept running by its kubelet until deleted.
#[derive(Debug)]
pub struct Pod {
    pub name: String,
    pub template: Arc<Template>,
    /// Container port → this machine's port.
    ports: BTreeMap<u16, u16>,
    cgroup: Cgroup,
    status: Mutex<Status>,
    deleted: CancellationToken,
    /// Set with `deleted`: SIGKILL at once (`--grace-period=0 --force`).
    forced: std::sync::atomic::AtomicBool,
    done: tokio::sync::Notify,
}

impl Pod {
    /// Creates pod `name` of `template` on `node` and starts its container.
    pub fn start(
        node: Arc<Node>,
        template: Arc<Template>,
        name: String,
    ) -> anyhow::Result<Arc<Pod>> {
        let mut ports = BTreeMap::new();
        for port in template.ports.values() {
            ports.insert(*port, common_local::local_kafka::cluster::free_port()?);
        }
        let limits = Limits {
            cpu_millis: template.cpu_limit_millis,
            memory_bytes: template.memory_limit_bytes,
        };
        let cgroup = Cgroup::create(&format!("{}-{name}", node.run_id), limits)?;
        let pod = Arc::new(Pod {
            name,
            template,
            ports,
            cgroup,
            status: Mutex::default(),
            deleted: CancellationToken::new(),
            forced: false.into(),
            done: tokio::sync::Notify::new(),
        });
        let running = pod.clone();
        tokio::spawn(async move {
            if let Err(err) = running.clone().run(node).await {
                tracing::error!(pod = %running.name, error = %format!("{err:#}"), "rehearsal: the pod could not run");
            }
            running.update(|s| {
                s.gone = true;
                s.ready = false;
            });
            running.done.notify_waiters();
        });
        Ok(pod)
    }

    fn update<T>(&self, change: impl FnOnce(&mut Status) -> T) -> T {
        change(&mut self.status.lock().expect("pod status"))
    }

    /// This machine's address for container port `name` (`http`, `ops`).
    pub fn addr(&self, name: &str) -> anyhow::Result<SocketAddr> {
        let port = self.template.port(name)?;
        Ok(SocketAddr::from(([127, 0, 0, 1], self.ports[&port])))
    }

    /// The container's arguments with its ports moved to this pod's.
    fn args(&self) -> Vec<String> {
        self.template
            .args
            .iter()
            .map(|arg| {
                arg.strip_prefix("0.0.0.0:")
                    .and_then(|p| p.parse::<u16>().ok())
                    .and_then(|p| self.ports.get(&p))
                    .map_or_else(|| arg.clone(), |local| format!("127.0.0.1:{local}"))
            })
            .collect()
    }

    pub fn is_ready(&self) -> bool {
        self.update(|s| s.ready)
    }

    pub fn is_gone(&self) -> bool {
        self.update(|s| s.gone)
    }

    /// In the Service's endpoints: ready, and not being terminated.
    pub fn is_endpoint(&self) -> bool {
        self.update(|s| s.ready && !s.terminating && !s.gone)
    }

    pub fn restarts(&self) -> u32 {
        self.update(|s| s.restarts)
    }

    pub fn exits(&self) -> Vec<Exit> {
        self.update(|s| s.exits.clone())
    }

    /// What its control group has used so far.
    pub fn usage(&self) -> Usage {
        self.cgroup.usage()
    }

    /// The async runtime's worker threads, as the process reports them on its ops
    /// port (`tokio_workers` in `/metrics`): how many CPUs the runtime believed it had.
    pub async fn tokio_workers(&self) -> Option<u64> {
        let url = format!("http://{}/metrics", self.addr("ops").ok()?);
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix("tokio_workers "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Deletes the pod: terminated gracefully (`force`: SIGKILL at once); returns
    /// once its container is gone.
    pub async fn delete(&self, force: bool) {
        self.forced.store(force, Ordering::SeqCst);
        let done = self.done.notified();
        self.deleted.cancel();
        if !self.is_gone() {
            done.await;
        }
    }

    /// Deletes the pod without waiting for its termination.
    pub fn delete_in_background(self: &Arc<Self>) {
        let pod = self.clone();
        tokio::spawn(async move { pod.delete(false).await });
    }

    /// The kubelet's loop for this pod's container.
    async fn run(self: Arc<Self>, node: Arc<Node>) -> anyhow::Result<()> {
        let log_path = node.logs.join(format!("{}.log", self.name));
        let mut in_a_row = 0;
        loop {
            let log = common_local::process::append_log(&log_path)?;
            let mut env = self.template.env.clone();
            env.extend(node.env.clone());
            env.extend(self.template.overrides.clone());
            let mut child = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(self.cgroup.exec_line())
                .arg(&node.binary)
                .args(self.args())
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .envs(env)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {} ({})", self.name, node.binary.display()))?;
            let pid = child.id();
            let started = Instant::now();
            let oom_before = self.cgroup.usage().oom_kills;
            self.update(|s| s.ready = false);
            tracing::info!(pod = %self.name, pid, "rehearsal: container started");
            let container = CancellationToken::new();
            let liveness_failed = CancellationToken::new();
            let probes = [
                self.template.readiness.clone().map(|p| {
                    tokio::spawn(self.clone().probe(
                        node.clone(),
                        p,
                        Check::Readiness,
                        container.clone(),
                        liveness_failed.clone(),
                    ))
                }),
                self.template.liveness.clone().map(|p| {
                    tokio::spawn(self.clone().probe(
                        node.clone(),
                        p,
                        Check::Liveness,
                        container.clone(),
                        liveness_failed.clone(),
                    ))
                }),
            ];
            let (status, reason, killed_after_grace) = tokio::select! {
                status = child.wait() => {
                    let status = status?;
                    let oom = self.cgroup.usage().oom_kills > oom_before;
                    let reason = match status.code() {
                        Some(0) => Reason::Completed,
                        _ if oom && status.signal() == Some(9) => Reason::OomKilled,
                        _ => Reason::Error,
                    };
                    (status, reason, false)
                }
                () = liveness_failed.cancelled() => {
                    tracing::warn!(pod = %self.name, "rehearsal: liveness probe failed; restarting the container");
                    let (status, killed) = self.terminate(&mut child, Instant::now(), false).await?;
                    (status, Reason::LivenessProbeFailed, killed)
                }
                () = self.deleted.cancelled() => {
                    let forced = self.forced.load(Ordering::SeqCst);
                    let (status, killed) = self.terminate(&mut child, Instant::now(), forced).await?;
                    (status, Reason::Deleted, killed && !forced)
                }
            };
            container.cancel();
            for probe in probes.into_iter().flatten() {
                let _ = probe.await;
            }
            let code = status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            self.update(|s| {
                s.ready = false;
                s.exits.push(Exit {
                    at_ms: node.ms(),
                    code,
                    reason,
                    killed_after_grace,
                });
            });
            tracing::info!(pod = %self.name, code, ?reason, "rehearsal: container stopped");
            if reason == Reason::Deleted {
                return Ok(());
            }
            if started.elapsed() >= BACKOFF_RESET {
                in_a_row = 0;
            }
            let delay = crash_loop_delay(in_a_row);
            in_a_row += 1;
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.deleted.cancelled() => return Ok(()),
            }
            self.update(|s| s.restarts += 1);
        }
    }

    /// Kubernetes' termination from `since`: out of the endpoints (asynchronously:
    /// the Service notices after its lag), the `preStop` pause, SIGTERM, and SIGKILL
    /// once the grace period — counted from `since`, `preStop` included — is over.
    /// Returns how it ended and whether it took SIGKILL.
    async fn terminate(
        &self,
        child: &mut tokio::process::Child,
        since: Instant,
        forced: bool,
    ) -> anyhow::Result<(std::process::ExitStatus, bool)> {
        self.update(|s| s.terminating = true);
        let pid = child.id().map(|p| Pid::from_raw(p as i32));
        if forced {
            if let Some(pid) = pid {
                let _ = kill(pid, Signal::SIGKILL);
            }
            return Ok((child.wait().await?, true));
        }
        let deadline = since + self.template.grace;
        // The pause runs while the process keeps serving; if the process dies in it,
        // so be it.
        tokio::select! {
            () = tokio::time::sleep_until((since + self.template.pre_stop).min(deadline)) => {}
            status = child.wait() => return Ok((status?, false)),
        }
        if let Some(pid) = pid {
            let _ = kill(pid, Signal::SIGTERM);
        }
        match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(status) => Ok((status?, false)),
            Err(_) => {
                tracing::warn!(pod = %self.name, "rehearsal: still running at the end of the grace period; SIGKILL");
                if let Some(pid) = pid {
                    let _ = kill(pid, Signal::SIGKILL);
                }
                Ok((child.wait().await?, true))
            }
        }
    }

    /// One probe of the container, every `period` after `initial_delay`, until the
    /// container stops: readiness sets the pod's readiness; liveness cancels
    /// `liveness_failed` after `failure_threshold` failures in a row.
    async fn probe(
        self: Arc<Self>,
        node: Arc<Node>,
        probe: Probe,
        check: Check,
        container: CancellationToken,
        liveness_failed: CancellationToken,
    ) {
        let Some(port) = self.ports.get(&probe.port) else {
            return;
        };
        let url = format!("http://127.0.0.1:{port}{}", probe.path);
        let mut ticks =
            tokio::time::interval_at(Instant::now() + probe.initial_delay, probe.period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut failures, mut successes) = (0, 0);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = container.cancelled() => return,
            }
            let ok = matches!(
                node.http.get(&url).timeout(probe.timeout).send().await,
                Ok(answer) if answer.status().is_success() || answer.status().is_redirection()
            );
            if ok {
                failures = 0;
                successes += 1;
            } else {
                successes = 0;
                failures += 1;
            }
            match check {
                Check::Readiness => {
                    if ok && successes >= probe.success_threshold {
                        self.update(|s| s.ready = true);
                    } else if !ok && failures >= probe.failure_threshold {
                        self.update(|s| s.ready = false);
                    }
                }
                Check::Liveness => {
                    if failures >= probe.failure_threshold {
                        liveness_failed.cancel();
                        return;
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Readiness,
    Liveness,
}

/// A Deployment and its ReplicaSet: keeps `replicas` pods of one template, replaces
/// a deleted pod at once, and rolls the pods over one by one.
#[derive(Debug)]
pub struct Deployment {
    pub template: Arc<Template>,
    node: Arc<Node>,
    pods: Mutex<Vec<Arc<Pod>>>,
    /// Every pod it ever made (the gone ones too), for their exits and restarts.
    history: Mutex<Vec<Arc<Pod>>>,
    next: AtomicU32,
}

impl Deployment {
    pub fn new(node: Arc<Node>, template: Template) -> Arc<Deployment> {
        Arc::new(Deployment {
            template: Arc::new(template),
            node,
            pods: Mutex::default(),
            history: Mutex::default(),
            next: AtomicU32::new(1),
        })
    }

    pub fn name(&self) -> &str {
        &self.template.deployment
    }

    fn add_pod(&self) -> anyhow::Result<Arc<Pod>> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let pod = Pod::start(
            self.node.clone(),
            self.template.clone(),
            format!("{}-{n}", self.name()),
        )?;
        self.pods.lock().expect("pods").push(pod.clone());
        self.history.lock().expect("pods").push(pod.clone());
        Ok(pod)
    }

    /// The pods it keeps now (terminating ones not among them).
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.pods.lock().expect("pods").clone()
    }

    /// Every pod it made.
    pub fn history(&self) -> Vec<Arc<Pod>> {
        self.history.lock().expect("pods").clone()
    }

    /// Pods that are ready.
    pub fn ready(&self) -> usize {
        self.pods().iter().filter(|p| p.is_ready()).count()
    }

    /// Container restarts of every pod it made.
    pub fn restarts(&self) -> u32 {
        self.history().iter().map(|p| p.restarts()).sum()
    }

    /// Scales to `replicas`: new pods, or the newest deleted (gracefully, in the
    /// background, as a ReplicaSet does).
    pub fn scale(&self, replicas: usize) -> anyhow::Result<()> {
        while self.pods().len() < replicas {
            self.add_pod()?;
        }
        while self.pods().len() > replicas {
            let pod = self.pods.lock().expect("pods").pop().expect("a pod");
            pod.delete_in_background();
        }
        Ok(())
    }

    /// Waits until `replicas` pods are ready.
    pub async fn wait_ready(&self, replicas: usize, limit: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        while self.ready() < replicas {
            anyhow::ensure!(
                start.elapsed() < limit,
                "{}: {} of {replicas} pods ready after {limit:?} (logs in {})",
                self.name(),
                self.ready(),
                self.node.logs.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(start.elapsed())
    }

    /// Deletes `pod`; its ReplicaSet puts a new one in its place at once. `force`:
    /// SIGKILL, no grace (what `kubectl delete pod --grace-period=0 --force` does).
    pub async fn replace(&self, pod: &Arc<Pod>, force: bool) -> anyhow::Result<Arc<Pod>> {
        self.pods
            .lock()
            .expect("pods")
            .retain(|p| !Arc::ptr_eq(p, pod));
        let new = self.add_pod()?;
        if force {
            pod.delete(true).await;
        } else {
            pod.delete_in_background();
        }
        Ok(new)
    }

    /// A rolling update (`kubectl rollout restart`) with `maxUnavailable: 0` and
    /// `maxSurge: 1`, the template's (any other is refused): for each old pod, a new pod is started and, once it is ready,
    /// the old one is deleted. Returns when every old pod has been deleted (their
    /// terminations may still be running).
    pub async fn rolling_restart(&self, limit: Duration) -> anyhow::Result<()> {
        anyhow::ensure!(
            (self.template.max_surge, self.template.max_unavailable) == (1, 0),
            "{}: the rehearsal rolls with maxSurge 1 and maxUnavailable 0 (what every \
             Deployment of the base sets); this one says {} and {}",
            self.name(),
            self.template.max_surge,
            self.template.max_unavailable
        );
        let old = self.pods();
        for pod in old {
            let new = self.add_pod()?;
            let start = Instant::now();
            while !new.is_ready() {
                anyhow::ensure!(
                    start.elapsed() < limit,
                    "{}: the new pod {} was not ready within {limit:?}",
                    self.name(),
                    new.name
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            self.pods
                .lock()
                .expect("pods")
                .retain(|p| !Arc::ptr_eq(p, &pod));
            pod.delete_in_background();
        }
        Ok(())
    }

    /// Deletes every pod and waits for their terminations.
    pub async fn delete(&self) {
        let pods: Vec<Arc<Pod>> = self.pods.lock().expect("pods").drain(..).collect();
        futures::future::join_all(pods.iter().map(|p| p.delete(false))).await;
        // Pods deleted in the background before.
        for pod in self.history() {
            let deadline = Instant::now() + pod.template.grace + Duration::from_secs(5);
            while !pod.is_gone() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_loop_restarts_at_once_then_backs_off_to_five_minutes() {
        let delays: Vec<u64> = (0..9).map(|n| crash_loop_delay(n).as_secs()).collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300, 300]);
    }
}
