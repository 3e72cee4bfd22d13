//! `cargo xtask up | down | status`: local infrastructure as a *list of services*.
//!
//! Every service — PostgreSQL on 5432 ([`crate::postgres`]), Redis on 6379
//! ([`crate::redis`]) and Apache Kafka on 9092 ([`crate::kafka`]) — is
//! described by the same handful of answers (see [`Service`]) and brought up by one
//! flow, [`up`]:
//!
//! 1. the user points us elsewhere (an environment variable set to something other
//!    than the default)? only check that;
//! 2. something already answers on the standard port? **reuse** it;
//! 3. installed but stopped? **start** it;
//! 4. missing, and we may install software? **install**, then start;
//! 5. otherwise print **exactly what the user must do**.
//!
//! `up` writes down (in `.ferriseats/started.json`, git-ignored) what *it* started
//! and how to stop it ([`Stop`]: a command, or a pid to signal), so `down` stops only
//! those: a server you were already running is never touched.
//!
//! Adding a service is one module (like [`crate::postgres`]), whose `SERVICE` is
//! made with [`service!`], and one entry in [`SERVICES`]; the flow does not change,
//! and `cargo xtask prefetch` installs the new service too ([`crate::prefetch`]).
//!
//! [`OBSERVABILITY`] lists the services that only `up --observability` brings up
//! (Prometheus, [`crate::prometheus`]): the same flow, for whoever wants to look at
//! the system's metrics; the tests need no running server.

use crate::process::{self, Privilege};
use crate::{kafka, postgres, prometheus, redis};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What xtask needs to know to manage one piece of infrastructure.
#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    /// Standard port on 127.0.0.1.
    pub port: u16,
    /// When this environment variable is set (to anything but `default_url`) the
    /// user runs the service somewhere else: `up` only checks that it answers there
    /// (with [`Service::check_url`]).
    pub env_override: &'static str,
    /// What `env_override` means when it is not set: the local server on `port`.
    pub default_url: &'static str,
    /// Other values of `env_override` that still mean the local server (Kafka's
    /// three local nodes listed in full, say): `up` manages it all the same.
    pub local_urls: &'static [&'static str],
    /// Does the service answer on 127.0.0.1:`port`? Cheap, no side effects.
    pub is_up: fn() -> bool,
    /// Is it installed here (ready to start, nothing to download)? Cheap, no side
    /// effects: `start` answers `Ok(None)` exactly when this is false, and `cargo
    /// xtask prefetch` installs what it is false for.
    pub installed: fn() -> bool,
    /// Start it if it is installed. `Ok(Some(stop))`: it is running now and `stop`
    /// says how to stop it again; `Ok(None)`: it is not installed.
    pub start: fn(Privilege) -> anyhow::Result<Option<Stop>>,
    /// Install it, or fail saying why we cannot.
    pub install: fn(Privilege) -> anyhow::Result<()>,
    /// Once it is up, make it usable by the tests and prove it by logging in.
    /// `Some(privilege)` when this run of `up` started it (so it may also change
    /// its set-up, e.g. set a password); `None` for a server we only reuse.
    pub prepare: fn(Option<Privilege>) -> anyhow::Result<()>,
    /// Can we log in / talk to it at this URL?
    pub check_url: fn(&str) -> anyhow::Result<()>,
    /// What the user must do when we cannot bring it up ourselves.
    pub manual: fn() -> String,
    /// Extra words for `status` about a server xtask started (e.g. where it keeps
    /// its data).
    pub details: fn() -> Option<String>,
}

/// The [`Service`] of a service module: `name`, `port`, `env_override` and
/// `default_url` are given, and the hooks are the module's own functions of the same
/// names (`is_up`, `installed`, `start`, `install`, `prepare`, `check_url`,
/// `manual`, `details`), which every service module defines.
macro_rules! service {
    (@or $given:expr) => { $given };
    (@or) => { &[] };
    (
        name: $name:expr,
        port: $port:expr,
        env_override: $env_override:expr,
        default_url: $default_url:expr
        $(, local_urls: $local_urls:expr)? $(,)?
    ) => {
        $crate::services::Service {
            name: $name,
            port: $port,
            env_override: $env_override,
            default_url: $default_url,
            local_urls: $crate::services::service!(@or $($local_urls)?),
            is_up,
            installed,
            start,
            install,
            prepare,
            check_url,
            manual,
            details,
        }
    };
}
pub(crate) use service;

/// How to stop a server that `up` started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// A command line that stops it (recorded when it was started, e.g. with the
    /// exact cluster version, so `down` needs no service-specific knowledge).
    Command(Vec<String>),
    /// A server without a stop command of its own: SIGTERM to this pid (SIGKILL if
    /// it lingers), provided the pid still runs `program`.
    Process { pid: u32, program: String },
    /// Several processes of one server (the nodes of a local Kafka cluster), stopped
    /// together, each like [`Stop::Process`].
    Processes { pids: Vec<u32>, program: String },
}

/// All the infrastructure, in start order.
pub const SERVICES: &[Service] = &[postgres::SERVICE, redis::SERVICE, kafka::SERVICE];

/// Started after [`SERVICES`], only by `cargo xtask up --observability`.
pub const OBSERVABILITY: &[Service] = &[prometheus::SERVICE];

/// Every service xtask knows, in start order.
pub fn all_services() -> impl Iterator<Item = &'static Service> {
    SERVICES.iter().chain(OBSERVABILITY)
}

/// The value of `service.env_override` if it points somewhere else than the local
/// default (set to the default, it changes nothing: e.g. exported for the tests).
pub fn override_url(service: &Service) -> Option<String> {
    std::env::var(service.env_override).ok().filter(|url| {
        !url.is_empty() && url != service.default_url && !service.local_urls.contains(&url.as_str())
    })
}

/// Where clients of `service` (tests, benchmarks) connect: the override, or the
/// local default.
pub fn url(service: &Service) -> String {
    override_url(service).unwrap_or_else(|| service.default_url.to_owned())
}

/// How long a service that was just started may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for a server that is listening but not ready yet (still starting).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

/// `cargo xtask up [--observability] [--brokers N]`: [`SERVICES`], and with
/// `observability` also [`OBSERVABILITY`]; Kafka with `brokers` nodes (1 or 3).
pub fn up(observability: bool, brokers: u32) -> anyhow::Result<()> {
    kafka::set_nodes(brokers)?;
    let mut state = State::load()?;
    let mut failed = Vec::new();
    let mut cached = None;
    let extra = if observability { OBSERVABILITY } else { &[] };
    for service in SERVICES.iter().chain(extra) {
        // Asking about sudo can take a moment: only do it when something must change.
        let mut privilege = || *cached.get_or_insert_with(process::privilege);
        if let Err(err) = up_one(service, &mut state, &mut privilege) {
            failed.push(err.context(service.name));
        }
    }
    // Every failure but the last is printed here; the last is the error `main` prints,
    // so the last line on the terminal says what to do.
    let Some(last) = failed.pop() else {
        return Ok(());
    };
    for err in &failed {
        eprintln!("{err:#}");
    }
    Err(last)
}

fn up_one(
    service: &Service,
    state: &mut State,
    privilege: &mut dyn FnMut() -> Privilege,
) -> anyhow::Result<()> {
    let name = service.name;
    let addr = address(service);

    // 1. The user's own server, wherever it is.
    if let Some(url) = override_url(service) {
        let shown = redact(&url);
        println!(
            "{name}: {}={shown} is set: checking only that",
            service.env_override
        );
        (service.check_url)(&url).with_context(|| {
            format!(
                "{} points at a server that does not work (unset it to use the local one \
                 that `cargo xtask up` manages)",
                service.env_override
            )
        })?;
        println!("{name}: ok at {shown}");
        return Ok(());
    }

    // 2. Something already answers: reuse it (a server that is still starting gets
    //    a few seconds; a port taken by something else is an error, not a reuse).
    if port_open(service.port) && !wait_until(service.is_up, SETTLE_TIMEOUT) {
        bail!(
            "{addr} accepts connections but does not answer as {name}: \
             another program is using the port. Stop it, or set {} to use another server.",
            service.env_override
        );
    }
    if (service.is_up)() {
        let origin = if state.started_by_xtask(name) {
            " (started earlier by xtask)"
        } else {
            ""
        };
        println!("{name}: reusing the server on {addr}{origin}");
        return (service.prepare)(None);
    }
    // We may have started it in an earlier run and someone stopped it since.
    state.forget(name)?;

    // 3. Installed: start it. 4. Missing: install, then start.
    let privilege = privilege();
    let started = (service.start)(privilege).and_then(|stop| match stop {
        Some(stop) => Ok(stop),
        None => {
            println!("{name}: not installed; trying to install it");
            (service.install)(privilege)?;
            (service.start)(privilege)?
                .with_context(|| format!("{name} was installed but cannot be found"))
        }
    });
    // 5. We cannot: say exactly what to do — the error itself when it already says it
    //    in one line, else the service's page of alternatives after it.
    let stop = started.map_err(|err| {
        if err.downcast_ref::<process::Fix>().is_some() {
            err
        } else {
            anyhow::anyhow!("{err:#}\n\n{}", (service.manual)())
        }
    })?;
    state.record(Started {
        name: name.to_owned(),
        address: addr.to_string(),
        stop,
    })?;
    // Start functions that wait for their server themselves return once it answers;
    // for the others this is where we wait.
    if !wait_until(service.is_up, START_TIMEOUT) {
        bail!(
            "started, but it does not answer on {addr} after {START_TIMEOUT:?}\n{}",
            (service.manual)()
        );
    }
    println!("{name}: started on {addr} (`cargo xtask down` stops it)");
    (service.prepare)(Some(privilege))
}

pub fn down() -> anyhow::Result<()> {
    let mut state = State::load()?;
    if state.started.is_empty() {
        println!("nothing to stop: xtask has not started any service");
        return Ok(());
    }
    let mut failed = Vec::new();
    // Reverse start order: the broker goes before the databases its clients use.
    for started in state.started.clone().into_iter().rev() {
        let outcome = match &started.stop {
            // A pid is checked by `terminate` itself (and a server that still runs
            // but no longer answers must be stopped all the same).
            Stop::Process { .. } | Stop::Processes { .. } => stop(&started),
            // A stop command needs a server to talk to.
            Stop::Command(_) => {
                let is_up = all_services()
                    .find(|s| s.name == started.name)
                    .is_none_or(|s| (s.is_up)());
                if is_up { stop(&started) } else { Ok(false) }
            }
        };
        match outcome {
            Ok(true) => println!("{}: stopped", started.name),
            Ok(false) => println!("{}: already stopped", started.name),
            Err(err) => {
                eprintln!("{}: {err:#}", started.name);
                failed.push(started.name.clone());
                continue;
            }
        }
        state.forget(&started.name)?;
    }
    if !failed.is_empty() {
        bail!("could not stop: {}", failed.join(", "));
    }
    Ok(())
}

/// Stops one server `up` started; `Ok(false)` if it turned out not to be running.
fn stop(started: &Started) -> anyhow::Result<bool> {
    match &started.stop {
        Stop::Command(argv) => {
            let log = log_path(&started.name, "stop");
            let mut cmd = std::process::Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            process::run_logged(&mut cmd, &log, Duration::from_secs(120))?;
            Ok(true)
        }
        Stop::Process { pid, program } => process::terminate(*pid, program, grace(started))
            .with_context(|| {
                format!("stopping {program} (pid {pid}); stop it by hand with `kill -9 {pid}`")
            }),
        Stop::Processes { pids, program } => {
            // SIGTERM to all at once: a cluster stopped one node after the other loses
            // its controller quorum with the second, and the last then waits in vain
            // for a controller to confirm its shutdown.
            let running: Vec<u32> = pids
                .iter()
                .copied()
                .filter(|pid| process::running(*pid, program))
                .collect();
            for pid in &running {
                println!("$ kill -s TERM {pid}");
                process::signal(*pid, "TERM")?;
            }
            for pid in &running {
                if !process::wait_gone(*pid, program, grace(started)) {
                    println!(
                        "{program} (pid {pid}) ignored SIGTERM for {:?}",
                        grace(started)
                    );
                    process::kill(*pid, program)?;
                }
            }
            Ok(!running.is_empty())
        }
    }
}

/// How long `started` may take to exit after SIGTERM: a Kafka node moves its
/// partitions' leadership away and closes its logs cleanly (which spares it a log
/// recovery at the next start), and that takes longer than a database's shutdown.
fn grace(started: &Started) -> Duration {
    if started.name == kafka::SERVICE.name {
        kafka::STOP_GRACE
    } else {
        STOP_GRACE
    }
}

/// How long a server may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub fn status() -> anyhow::Result<()> {
    let state = State::load()?;
    for service in all_services() {
        let up = (service.is_up)();
        let started = state.find(service.name);
        let optional = OBSERVABILITY.iter().any(|s| s.name == service.name);
        let origin = match (up, started) {
            (true, Some(started)) => {
                let mut words = "started by xtask".to_owned();
                match &started.stop {
                    Stop::Process { pid, .. } => words += &format!(", pid {pid}"),
                    Stop::Processes { pids, .. } => {
                        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
                        words += &format!(", pids {}", pids.join(" "));
                    }
                    Stop::Command(_) => {}
                }
                if let Some(details) = (service.details)() {
                    words += &format!(", {details}");
                }
                words
            }
            (true, None) => "external".to_owned(),
            (false, None) if optional => {
                "not started (use `cargo xtask up --observability`)".to_owned()
            }
            (false, _) => "-".to_owned(),
        };
        println!(
            "{:<12} {:<16} {:<5} {origin}",
            service.name,
            address(service).to_string(),
            if up { "up" } else { "down" },
        );
        if let Some(url) = override_url(service) {
            let check = match (service.check_url)(&url) {
                Ok(()) => "up".to_owned(),
                Err(err) => format!("down ({err:#})"),
            };
            println!(
                "{:<12} {}={} {check}",
                "",
                service.env_override,
                redact(&url)
            );
        }
    }
    Ok(())
}

/// A URL fit for printing: the password replaced by `***` (shared with the services).
pub use common_local::endpoints::redact;

fn address(service: &Service) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, service.port))
}

/// Does anything accept TCP connections on 127.0.0.1:`port`?
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

fn wait_until(check: fn() -> bool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What `up` started, kept in `.ferriseats/started.json` so `down` can undo it later.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    started: Vec<Started>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    pub name: String,
    pub address: String,
    pub stop: Stop,
}

impl State {
    /// `.ferriseats/` in the workspace root: xtask's state, logs and server data.
    pub fn dir() -> PathBuf {
        process::workspace_root().join(".ferriseats")
    }

    fn path() -> PathBuf {
        Self::dir().join("started.json")
    }

    pub fn load() -> anyhow::Result<State> {
        let path = Self::path();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is damaged; delete it", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(Self::dir())?;
        let path = Self::path();
        std::fs::write(&path, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", path.display()))
    }

    fn started_by_xtask(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// What `up` recorded about the server `name`, if it started it.
    pub fn find(&self, name: &str) -> Option<&Started> {
        self.started.iter().find(|s| s.name == name)
    }

    /// Writes down (replacing any earlier entry) that xtask started this server.
    pub fn record(&mut self, started: Started) -> anyhow::Result<()> {
        self.started.retain(|s| s.name != started.name);
        self.started.push(started);
        self.save()
    }

    pub fn forget(&mut self, name: &str) -> anyhow::Result<()> {
        if self.started_by_xtask(name) {
            self.started.retain(|s| s.name != name);
            self.save()?;
        }
        Ok(())
    }
}

/// Where a service's start command logs (see [`process::run_logged`]).
pub fn log_path(name: &str, what: &str) -> PathBuf {
    State::dir().join("logs").join(format!("{name}-{what}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compose_file_names_the_same_defaults() {
        // Docker users start phase2-events/compose.yaml instead of `up`; its header
        // promises the same defaults (tests/compose.rs checks the rest of the file).
        let path = process::workspace_root().join("phase2-events/compose.yaml");
        let compose = std::fs::read_to_string(&path).unwrap();
        for service in SERVICES {
            assert!(
                compose.contains(service.default_url) && compose.contains(service.env_override),
                "{} does not mention {}={}",
                path.display(),
                service.env_override,
                service.default_url
            );
            assert!(
                compose.contains(&format!("\"{0}:{0}\"", service.port)),
                "{} does not publish port {}",
                path.display(),
                service.port
            );
        }
    }

    #[test]
    fn stop_entries_of_either_kind_round_trip() {
        // Older state files hold a plain command line; both forms must read back.
        let text = r#"{"started":[
            {"name":"postgresql","address":"127.0.0.1:5432","stop":["pg_ctlcluster","16","main","stop"]},
            {"name":"kafka","address":"127.0.0.1:9092","stop":{"pid":42,"program":"java"}},
            {"name":"kafka","address":"127.0.0.1:9092","stop":{"pids":[42,43,44],"program":"java"}}]}"#;
        let state: State = serde_json::from_str(text).unwrap();
        assert!(matches!(&state.started[0].stop, Stop::Command(argv) if argv.len() == 4));
        assert_eq!(
            state.started[1].stop,
            Stop::Process {
                pid: 42,
                program: "java".to_owned()
            }
        );
        assert_eq!(
            state.started[2].stop,
            Stop::Processes {
                pids: vec![42, 43, 44],
                program: "java".to_owned()
            }
        );
        let again: State = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(again.started[1].stop, state.started[1].stop);
    }
}
