//! A small supervisor: every service of phase 4 runs as a process of its own, and
//! what dies is started again, with backoff — what an orchestrator (systemd, a
//! Kubernetes kubelet) does, small enough to read in one sitting.
//!
//! | concern | where |
//! |---|---|
//! | the processes of the platform, two replicas of the order API and of the gateway | [`platform`] |
//! | start, watch, restart with exponential backoff, reset once it stayed up | [`Supervisor::keep`] |
//! | a crash loop is slowed down, never given up on (Kubernetes' `CrashLoopBackOff`) | [`RestartPolicy::delay`] |
//! | stop: SIGTERM to every process, SIGKILL after a grace period | [`Supervisor::keep`] |
//! | `/health`, `/metrics` (`supervisor_restarts_total`, `supervisor_up`), `/processes` | [`Supervisor::ops_router`] |
//!
//! The restart delay after the `n`th quick death in a row is `min(max, base · 2ⁿ)`:
//! 250 ms, 500 ms, 1 s … 8 s. A process that stayed up for `stable_after` (10 s) is
//! healthy again, and its next death restarts it after `base`. Kubernetes does the
//! same with 10 s doubling to 5 minutes, reset after 10 minutes up; a workshop wants
//! to see a process come back in well under a second.

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use common::resilience::FullJitterBackoff;
use common::shutdown::CancellationToken;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the supervisor restarts, and where it reports.
#[derive(Debug, Clone, clap::Args)]
pub struct SupervisorSettings {
    /// Do not restart a process that dies (to see what restarting prevents).
    #[arg(long, env = "SUPERVISOR_NO_RESTART")]
    pub no_restart: bool,
    /// The first restart's delay; it doubles with each quick death in a row.
    #[arg(long, env = "SUPERVISOR_RESTART_BASE", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub restart_base: Duration,
    /// The longest restart delay.
    #[arg(long, env = "SUPERVISOR_RESTART_MAX", default_value = "8s", value_parser = humantime::parse_duration)]
    pub restart_max: Duration,
    /// A process up this long is healthy again: its next restart waits only the base.
    #[arg(long, env = "SUPERVISOR_STABLE_AFTER", default_value = "10s", value_parser = humantime::parse_duration)]
    pub stable_after: Duration,
    /// How long a process may take to stop after SIGTERM before it gets SIGKILL.
    #[arg(long, env = "SUPERVISOR_GRACE", default_value = "15s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// The supervisor's `/health`, `/metrics` and `/processes`.
    #[arg(long, env = "SUPERVISOR_OPS_ADDR", default_value = "127.0.0.1:9420")]
    pub supervisor_ops_addr: SocketAddr,
    /// Each process's output goes to `<dir>/<name>.log`.
    #[arg(
        long,
        env = "SUPERVISOR_LOGS",
        default_value = ".ferriseats/logs/phase4"
    )]
    pub logs: PathBuf,
}

/// One process the supervisor keeps running: this binary with `args`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// Unique among the supervisor's processes (`order-1`, `gateway-2`, …).
    pub name: String,
    pub args: Vec<String>,
    /// Set in its environment (the rest it inherits from the supervisor's).
    pub env: Vec<(String, String)>,
    /// Where its `/health` answers (the ops port), when it has one.
    pub ops: Option<SocketAddr>,
}

impl Program {
    pub fn new(name: &str, args: &[&str], ops: Option<SocketAddr>) -> Program {
        Program {
            name: name.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: Vec::new(),
            ops,
        }
    }
}

/// When to restart a process that died.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    backoff: FullJitterBackoff,
    stable_after: Duration,
}

impl RestartPolicy {
    pub fn of(settings: &SupervisorSettings) -> RestartPolicy {
        RestartPolicy {
            backoff: FullJitterBackoff {
                base: settings.restart_base,
                cap: settings.restart_max,
                max_retries: u32::MAX,
            },
            stable_after: settings.stable_after,
        }
    }

    /// The delay before the next start, and the count of quick deaths in a row after
    /// it: a process that lived `lived` after `quick` quick deaths in a row. No jitter:
    /// one process restarting is no herd, and the schedule stays predictable.
    pub fn delay(&self, quick: u32, lived: Duration) -> (Duration, u32) {
        let quick = if lived >= self.stable_after { 0 } else { quick };
        (self.backoff.ceiling(quick), quick.saturating_add(1))
    }
}

/// What the supervisor knows of one process, as `/processes` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    pub name: String,
    /// The running process's id (absent while it is down).
    pub pid: Option<u32>,
    /// Restarts since the supervisor started.
    pub restarts: u64,
    /// How the last run ended (`signal: 9 (SIGKILL)`, `exit status: 1`).
    pub last_exit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProcessLabels {
    process: String,
}

#[derive(Debug, Default)]
struct Metrics {
    restarts: Family<ProcessLabels, Counter>,
    up: Family<ProcessLabels, Gauge>,
}

/// Starts the programs and keeps them running until `shutdown`.
#[derive(Debug, Clone)]
pub struct Supervisor {
    settings: SupervisorSettings,
    binary: PathBuf,
    status: Arc<Mutex<BTreeMap<String, ProcessStatus>>>,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
}

impl Supervisor {
    /// `binary` is the program every process runs (this one, normally).
    pub fn new(settings: SupervisorSettings, binary: PathBuf) -> Supervisor {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        registry.register(
            "supervisor_restarts",
            "Times the supervisor started a process again after it died",
            metrics.restarts.clone(),
        );
        registry.register(
            "supervisor_up",
            "1 while the process runs, 0 while it is down (waiting for its restart, or not restarted)",
            metrics.up.clone(),
        );
        Supervisor {
            settings,
            binary,
            status: Arc::default(),
            metrics: Arc::new(metrics),
            registry: Arc::new(registry),
        }
    }

    /// Runs every program (and the ops server) until `shutdown`, then stops them all.
    pub async fn run(
        self,
        programs: Vec<Program>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let ops = tokio::net::TcpListener::bind(self.settings.supervisor_ops_addr)
            .await
            .with_context(|| {
                format!(
                    "the supervisor's ops port {} is taken (another `phase4-chaos all`?)",
                    self.settings.supervisor_ops_addr
                )
            })?;
        self.serve(ops, programs, shutdown).await
    }

    /// [`run`](Self::run) with an ops listener the caller bound (tests bind port 0).
    pub async fn serve(
        self,
        ops: tokio::net::TcpListener,
        programs: Vec<Program>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.settings.logs)
            .with_context(|| format!("creating {}", self.settings.logs.display()))?;
        tracing::info!(ops = %ops.local_addr()?, processes = programs.len(), "supervisor: starting");
        let server = axum::serve(ops, self.ops_router())
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let mut kept = tokio::task::JoinSet::new();
        for program in programs {
            kept.spawn(self.clone().keep(program, shutdown.clone()));
        }
        let (served, _) = tokio::join!(server, async {
            while let Some(result) = kept.join_next().await {
                if let Ok(Err(err)) = result {
                    tracing::error!(error = %format!("{err:#}"), "supervisor: a process could not be started");
                }
            }
        });
        served?;
        Ok(())
    }

    /// The supervisor's ops routes: `/health`, `/metrics`, `/processes` (JSON).
    pub fn ops_router(&self) -> Router {
        Router::new()
            .route("/health", get(|| async { "ok" }))
            .route(
                "/metrics",
                get(|State(s): State<Supervisor>| async move {
                    crate::metrics_response(&s.registry)
                }),
            )
            .route(
                "/processes",
                get(|State(s): State<Supervisor>| async move { axum::Json(s.processes()) }),
            )
            .with_state(self.clone())
    }

    /// SIGKILL to the process `name` of this supervisor, as [`kill_process`] does
    /// from outside. Returns the pid killed.
    pub fn kill(&self, name: &str) -> anyhow::Result<u32> {
        sigkill(&self.processes(), name)
    }

    /// Where the process `name` writes its output.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.settings.logs.join(format!("{name}.log"))
    }

    /// Every process and what is known of it, by name.
    pub fn processes(&self) -> Vec<ProcessStatus> {
        self.status
            .lock()
            .expect("status lock")
            .values()
            .cloned()
            .collect()
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut ProcessStatus)) {
        let mut status = self.status.lock().expect("status lock");
        let entry = status
            .entry(name.to_owned())
            .or_insert_with(|| ProcessStatus {
                name: name.to_owned(),
                ..ProcessStatus::default()
            });
        change(entry);
    }

    /// Keeps one program running: start it, wait for it to die, wait the policy's
    /// delay, start it again — until `shutdown`, when it gets SIGTERM (and SIGKILL
    /// after the grace period).
    async fn keep(self, program: Program, shutdown: CancellationToken) -> anyhow::Result<()> {
        let labels = ProcessLabels {
            process: program.name.clone(),
        };
        let policy = RestartPolicy::of(&self.settings);
        let log_path = self.log_path(&program.name);
        let mut quick = 0;
        let mut first = true;
        loop {
            let log = common_local::process::append_log(&log_path)?;
            let mut child = tokio::process::Command::new(&self.binary)
                .args(&program.args)
                .envs(program.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| {
                    format!("starting {} ({})", program.name, self.binary.display())
                })?;
            let pid = child.id();
            let started = Instant::now();
            if !first {
                self.metrics.restarts.get_or_create(&labels).inc();
            }
            self.update(&program.name, |s| {
                s.pid = pid;
                if !first {
                    s.restarts += 1;
                }
            });
            self.metrics.up.get_or_create(&labels).set(1);
            tracing::info!(process = %program.name, pid, restart = !first, "supervisor: started");
            first = false;

            let exit = tokio::select! {
                exit = child.wait() => exit?,
                () = shutdown.cancelled() => {
                    if let Some(pid) = pid {
                        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                    }
                    if tokio::time::timeout(self.settings.grace, child.wait()).await.is_err() {
                        tracing::warn!(process = %program.name, "supervisor: no exit after SIGTERM; SIGKILL");
                        let _ = child.kill().await;
                    }
                    self.metrics.up.get_or_create(&labels).set(0);
                    self.update(&program.name, |s| s.pid = None);
                    return Ok(());
                }
            };
            let lived = started.elapsed();
            self.metrics.up.get_or_create(&labels).set(0);
            self.update(&program.name, |s| {
                s.pid = None;
                s.last_exit = Some(exit.to_string());
            });
            if self.settings.no_restart {
                tracing::warn!(process = %program.name, %exit, "supervisor: died; not restarted (--no-restart)");
                shutdown.cancelled().await;
                return Ok(());
            }
            let (delay, next) = policy.delay(quick, lived);
            quick = next;
            tracing::warn!(
                process = %program.name,
                %exit,
                lived_ms = lived.as_millis() as u64,
                restart_in_ms = delay.as_millis() as u64,
                "supervisor: died; restarting"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return Ok(()),
            }
        }
    }
}

/// The supervisor's `/processes`, read by a scenario or the dashboard.
pub async fn processes(ops: SocketAddr) -> anyhow::Result<Vec<ProcessStatus>> {
    let url = format!("http://{ops}/processes");
    reqwest::get(&url)
        .await
        .with_context(|| {
            format!("the supervisor does not answer at {url} (is `phase4-chaos all` running?)")
        })?
        .error_for_status()?
        .json()
        .await
        .context("reading /processes")
}

/// SIGKILL to the supervised process `name`: what a crash, an OOM kill or a pulled
/// plug does — no chance to finish anything. Returns the pid killed.
pub async fn kill_process(ops: SocketAddr, name: &str) -> anyhow::Result<u32> {
    sigkill(&processes(ops).await?, name)
}

/// SIGKILL to `name`, one of `status`; returns the pid killed.
fn sigkill(status: &[ProcessStatus], name: &str) -> anyhow::Result<u32> {
    let pid = status
        .iter()
        .find(|p| p.name == name)
        .with_context(|| format!("the supervisor runs no process named {name}"))?
        .pid
        .with_context(|| format!("{name} is down already"))?;
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
        .with_context(|| format!("kill -9 {pid} ({name})"))?;
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            backoff: FullJitterBackoff {
                base: Duration::from_millis(250),
                cap: Duration::from_secs(8),
                max_retries: u32::MAX,
            },
            stable_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn quick_deaths_in_a_row_double_the_delay_up_to_the_cap() {
        let policy = policy();
        let mut quick = 0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            let (delay, next) = policy.delay(quick, Duration::from_millis(100));
            delays.push(delay.as_millis());
            quick = next;
        }
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
    }

    #[test]
    fn a_process_that_stayed_up_restarts_after_the_base_again() {
        let policy = policy();
        let (_, quick) = policy.delay(5, Duration::from_millis(100));
        assert_eq!(quick, 6);
        let (delay, quick) = policy.delay(quick, Duration::from_secs(30));
        assert_eq!(delay, Duration::from_millis(250));
        assert_eq!(quick, 1);
    }
}
