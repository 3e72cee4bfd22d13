//! The Kafka-protocol broker as a [`Service`], and `cargo xtask broker restart`.
//!
//! The services talk to Kafka through rdkafka, so any broker that speaks the Kafka
//! protocol on [`DEFAULT_BROKERS`] will do (`KAFKA_BROKERS` points them elsewhere):
//! Apache Kafka from `phase2-events/compose.yaml` for those with Docker, or —
//! what `cargo xtask up` runs natively — [`tansu`](https://crates.io/crates/tansu), a
//! Kafka-compatible broker written in Rust and installed with `cargo install`. Both
//! are recognised the same way: by a well-formed answer to an ApiVersions request
//! ([`kafka_probe`]), not merely by an open port.
//!
//! tansu keeps its whole log in one SQLite file, `.ferriseats/tansu/tansu.db`, so a
//! broker that is killed and started again loses nothing: `down` stops the process
//! and keeps the file. It has no daemon mode, so xtask starts it detached
//! ([`process::spawn_detached`]) with its output in `.ferriseats/logs/kafka-broker.log`,
//! and writes its pid down for `down` and for [`restart`].
//!
//! `cargo xtask broker restart [--down-for 5s]` is the fault the phase-2 and
//! phase-4 chaos scenarios inject: SIGKILL (a crash — no shutdown code runs), an
//! optional outage, and a start on the same storage; it returns once the broker
//! answers again and says how long that took.

use crate::kafka_probe;
use crate::process::{self, Privilege};
use crate::services::{self, Service, Started, State, Stop};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The bootstrap servers the services and tests use when `KAFKA_BROKERS` is not set.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
/// Points the services and tests at other brokers (`host:port[,host:port…]`).
pub const ENV_BROKERS: &str = "KAFKA_BROKERS";
const NAME: &str = "kafka";
const PORT: u16 = 9092;
const PROGRAM: &str = "tansu";
/// The one way to build tansu that works (see shared/CRATES.md): `--locked`, because
/// newer versions of its dependencies break the build, and `libsql`, because the
/// default feature set has no storage engine at all.
const INSTALL_ARGS: &[&str] = &["install", "tansu", "--locked", "--features", "libsql"];
/// How long one ApiVersions probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a freshly started broker may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub const SERVICE: Service = services::service! {
    name: NAME, port: PORT, env_override: ENV_BROKERS, default_url: DEFAULT_BROKERS,
};

/// Where the broker xtask starts keeps its log of messages (one SQLite file).
fn storage_dir() -> PathBuf {
    State::dir().join("tansu")
}

/// The file tansu keeps everything in.
fn storage_file() -> PathBuf {
    storage_dir().join(STORAGE_FILE)
}

const STORAGE_FILE: &str = "tansu.db";

fn log_file() -> PathBuf {
    services::log_path(NAME, "broker")
}

/// Up means: 127.0.0.1:9092 answers ApiVersions like a Kafka broker.
fn is_up() -> bool {
    kafka_probe::api_versions(DEFAULT_BROKERS, PROBE_TIMEOUT).is_ok()
}

/// The tansu binary: on `$PATH`, or where `cargo install` puts it (which is not on
/// `$PATH` in every shell, e.g. a CI job that never sourced `~/.cargo/env`).
fn find_tansu() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    process::find(PROGRAM, cargo_home.map(|home| home.join("bin")).as_deref())
}

fn start(_privilege: Privilege) -> anyhow::Result<Option<Stop>> {
    let Some(tansu) = find_tansu() else {
        return Ok(None);
    };
    let pid = start_broker(&tansu)?;
    Ok(Some(Stop::Process {
        pid,
        program: PROGRAM.to_owned(),
    }))
}

/// Starts tansu on 127.0.0.1:9092 with the SQLite storage, detached, and waits until
/// it answers ApiVersions. Returns its pid.
fn start_broker(tansu: &std::path::Path) -> anyhow::Result<u32> {
    let child = launch(tansu, &storage_dir(), DEFAULT_BROKERS, &log_file())?;
    Ok(child.id())
}

/// Starts tansu listening on `addr` with its storage in `dir`, detached, and waits
/// until it answers ApiVersions.
fn launch(
    tansu: &std::path::Path,
    dir: &std::path::Path,
    addr: &str,
    log: &std::path::Path,
) -> anyhow::Result<std::process::Child> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let listener = format!("tcp://{addr}");
    let mut cmd = Command::new(tansu);
    // tansu 0.6 opens a `sqlite://` path relative to its working directory (an
    // absolute path ends up appended to it), hence the relative URL and the
    // working directory.
    cmd.arg("broker")
        .args(["--listener-url", &listener])
        .args(["--advertised-listener-url", &listener])
        .args(["--storage-engine", &format!("sqlite://{STORAGE_FILE}")])
        .current_dir(dir);
    let started = Instant::now();
    let child = process::spawn_until_ready(
        &cmd,
        log,
        PROGRAM,
        &format!("ApiVersions on {addr}"),
        START_TIMEOUT,
        || kafka_probe::api_versions(addr, PROBE_TIMEOUT).is_ok(),
    )?;
    println!(
        "kafka: tansu (pid {}) answers ApiVersions on {addr} after {:.1} s",
        child.id(),
        started.elapsed().as_secs_f64()
    );
    Ok(child)
}

/// A tansu of its own on a free port, with empty storage in `dir` (emptied first),
/// stopped when dropped. The benchmark uses one: how fast tansu answers depends on
/// how much its SQLite file already holds, so a shared broker that tests have filled
/// gives figures that drift from run to run.
#[derive(Debug)]
pub struct FreshBroker {
    child: std::process::Child,
    /// Its address, for `bootstrap.servers`.
    pub brokers: String,
}

impl FreshBroker {
    pub fn start(dir: &std::path::Path) -> anyhow::Result<FreshBroker> {
        let tansu = find_tansu().with_context(|| {
            format!(
                "tansu is not installed: `cargo xtask up` installs it (or `cargo {}`)",
                INSTALL_ARGS.join(" ")
            )
        })?;
        match std::fs::remove_dir_all(dir) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(err).context(format!("clearing {}", dir.display()));
            }
            _ => {}
        }
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let brokers = addr.to_string();
        let child = launch(&tansu, dir, &brokers, &dir.join("tansu.log"))?;
        Ok(FreshBroker { child, brokers })
    }
}

impl Drop for FreshBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn install(_privilege: Privilege) -> anyhow::Result<()> {
    println!(
        "kafka: building the broker tansu from source; this takes 10–17 minutes on 2 cores \
         (once: later runs find it in ~/.cargo/bin)"
    );
    let mut cmd = Command::new(process::cargo());
    // Outside the workspace, so its settings (profiles, config) do not apply.
    cmd.args(INSTALL_ARGS).current_dir(std::env::temp_dir());
    process::run(&mut cmd, Duration::from_secs(45 * 60)).context(
        "building tansu failed; the command above can be run by hand to see why \
         (it needs a C compiler for SQLite)",
    )
}

/// Prove that the tests' brokers speak the protocol.
fn prepare(_started_here: Option<Privilege>) -> anyhow::Result<()> {
    let apis = kafka_probe::api_versions(DEFAULT_BROKERS, PROBE_TIMEOUT)?;
    println!(
        "kafka: ApiVersions answered at {DEFAULT_BROKERS} ({} APIs)",
        apis.len()
    );
    Ok(())
}

/// Does at least one of the comma-separated `host:port` brokers answer ApiVersions?
/// (A client needs only one to bootstrap; the others are reported.)
pub fn check_url(brokers: &str) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    let mut answered = 0;
    for broker in brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        // Clients accept `PLAINTEXT://host:port` as well as `host:port`.
        let addr = broker.rsplit("://").next().unwrap_or(broker);
        match kafka_probe::api_versions(addr, PROBE_TIMEOUT) {
            Ok(_) => answered += 1,
            Err(err) => errors.push(format!("{broker}: {err:#}")),
        }
    }
    if answered == 0 {
        if errors.is_empty() {
            bail!("{ENV_BROKERS} lists no broker (expected host:port[,host:port…])");
        }
        bail!("no broker answers ApiVersions:\n  {}", errors.join("\n  "));
    }
    for error in errors {
        eprintln!("kafka: warning: {error}");
    }
    Ok(())
}

/// For `status`: where the broker keeps its storage and its log.
fn details() -> Option<String> {
    Some(format!(
        "storage {}, log {}",
        storage_file().display(),
        log_file().display()
    ))
}

fn manual() -> String {
    let cargo_install = format!("cargo {}", INSTALL_ARGS.join(" "));
    format!(
        "A Kafka-protocol broker is needed on {DEFAULT_BROKERS}. Either:\n\
         \x20 tansu (any machine with Rust; 10–17 minutes to build):\n\
         \x20   {cargo_install}\n\
         \x20   then `cargo xtask up` starts it (storage: {storage})\n\
         \x20 Docker (Apache Kafka, with PostgreSQL and Redis):\n\
         \x20   docker compose -f phase2-events/compose.yaml up -d --wait\n\
         \x20 or brokers elsewhere:\n\
         \x20   export {ENV_BROKERS}=HOST:PORT[,HOST:PORT…]\n\
         then run `cargo xtask up` again.",
        storage = storage_file().display()
    )
}

#[derive(Debug, Args)]
pub struct BrokerArgs {
    #[command(subcommand)]
    action: BrokerAction,
}

#[derive(Debug, Subcommand)]
enum BrokerAction {
    /// Crash the broker that `cargo xtask up` started (SIGKILL) and start it again on
    /// the same storage; returns once it answers. For chaos scenarios.
    Restart {
        /// How long the broker stays down between the kill and the start, e.g. 5s.
        #[arg(long, default_value = "0s", value_parser = crate::bench::parse_duration)]
        down_for: Duration,
    },
}

pub fn run(args: &BrokerArgs) -> anyhow::Result<()> {
    match args.action {
        BrokerAction::Restart { down_for } => restart(down_for),
    }
}

/// `cargo xtask broker restart`: see the module docs.
fn restart(down_for: Duration) -> anyhow::Result<()> {
    if let Some(brokers) = services::override_url(&SERVICE) {
        bail!(
            "{ENV_BROKERS}={brokers} is set: that broker is not xtask's to restart \
             (unset it to use the local one)"
        );
    }
    let mut state = State::load()?;
    let (old_pid, program) = match state.find(NAME).map(|started| &started.stop) {
        Some(Stop::Process { pid, program }) => (*pid, program.clone()),
        Some(Stop::Command(_)) | None if is_up() => bail!(
            "the broker on {DEFAULT_BROKERS} was not started by `cargo xtask up`, so xtask \
             cannot restart it: restart it yourself, or stop it and run `cargo xtask up`"
        ),
        _ => bail!("no broker is running on {DEFAULT_BROKERS}: start one with `cargo xtask up`"),
    };
    let tansu = find_tansu().with_context(|| {
        format!(
            "tansu is no longer installed, so the broker could not be started again: \
             install it with `cargo {}`",
            INSTALL_ARGS.join(" ")
        )
    })?;
    let killed_at = Instant::now();
    if process::kill(old_pid, &program)? {
        println!("kafka: killed tansu (pid {old_pid}) with SIGKILL");
    } else {
        println!("kafka: tansu (pid {old_pid}) was not running");
    }
    if !down_for.is_zero() {
        println!("kafka: staying down for {down_for:?}");
        std::thread::sleep(down_for);
    }
    let new_pid = start_broker(&tansu).inspect_err(|_| {
        // The old pid is gone; keep no stale entry for `down` to chase.
        let _ = state.forget(NAME);
    })?;
    state.record(Started {
        name: NAME.to_owned(),
        address: DEFAULT_BROKERS.to_owned(),
        stop: Stop::Process {
            pid: new_pid,
            program: PROGRAM.to_owned(),
        },
    })?;
    println!(
        "kafka: restarted as pid {new_pid}; unavailable for {:.1} s in all",
        killed_at.elapsed().as_secs_f64()
    );
    Ok(())
}
