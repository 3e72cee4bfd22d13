//! `cargo xtask footprint`: what each phase's `all` costs a laptop, measured.
//!
//! For each phase (1–4) it starts the phase as its README does (`cargo run -p …`,
//! a debug build, the default settings, against the services `cargo xtask up`
//! started), waits until `GET /menu` on 127.0.0.1:3000 answers, and measures two
//! windows:
//!
//! * **idle** — nobody ordering: the relays, consumers, probes and health checks alone;
//! * **load** — phase 4's load generator offering `--rate` requests per second of its
//!   usual mix (menu, place, status, duplicate) to 127.0.0.1:3000.
//!
//! CPU is the process tree's user + system time over the window (from
//! `/proc/PID/stat`, every thread, children included) divided by the window: 100 % is
//! one core busy. Memory is the tree's proportional set size (`Pss`: shared pages
//! divided among the processes sharing them, so a sum means something), its peak over
//! the window sampled twice a second. The same is taken of the infrastructure
//! (PostgreSQL's processes, Redis, the Kafka JVM) in the same windows, since a learner's
//! laptop runs it too. The load generator is not counted (it is not in the tree).
//!
//! The README's footprint table is this command's output (`--markdown`).

use crate::prometheus::http_get;
use crate::services;
use anyhow::{Context, bail, ensure};
use common_local::process::{self as proc_util, cargo, target_dir, workspace_root};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct FootprintArgs {
    /// The phases to measure, in order.
    #[arg(long = "phase", value_delimiter = ',', default_values_t = [1u8, 2, 3, 4],
          value_parser = clap::value_parser!(u8).range(1..=4))]
    phases: Vec<u8>,
    /// The idle window.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// The load window.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    load: Duration,
    /// Requests per second offered during the load window.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Write the measurements as JSON too.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Use the debug binaries already in the target directory instead of building
    /// them (tests).
    #[arg(long, hide = true)]
    no_build: bool,
}

/// One window's measurement of a set of processes.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Usage {
    /// Percent of one core, averaged over the window.
    pub cpu_percent: f64,
    /// Peak memory (proportional set size) over the window, MiB.
    pub memory_mib: f64,
}

#[derive(Debug, Serialize)]
pub struct PhaseFootprint {
    pub phase: u8,
    pub command: String,
    /// Processes in the phase's tree at the end of the idle window.
    pub processes: usize,
    pub idle: Usage,
    pub load: Usage,
    pub infra_idle: Usage,
    pub infra_load: Usage,
    /// What the load generator saw: 2xx per second, server errors and failures, p99.
    pub goodput_per_s: f64,
    pub errors: u64,
    pub p99_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: String,
    idle_s: f64,
    load_s: f64,
    rate: u32,
    phases: Vec<PhaseFootprint>,
}

const URL: &str = "http://127.0.0.1:3000";

/// Each phase's package (its binary has the same name, phase 4's is also the load
/// generator) and whether its README runs it with `all`.
const PHASES: [(&str, bool); 4] = [
    ("phase1-monolith", false),
    ("phase2-events", true),
    ("phase3-observability", true),
    ("phase4-chaos", true),
];

pub fn run(args: &FootprintArgs) -> anyhow::Result<()> {
    services::up(false, 1)?;
    if !args.no_build {
        // As a learner runs them: debug builds. One `cargo build` for all, so shared
        // dependencies are compiled once.
        let mut build = Command::new(cargo());
        build.arg("build").current_dir(workspace_root());
        for (package, _) in PHASES {
            build.args(["-p", package]);
        }
        proc_util::run(&mut build, Duration::from_secs(60 * 60))?;
    }
    let machine = machine();
    println!(
        "footprint on {machine}: idle {:?}, load {:?} at {} requests/s",
        args.idle, args.load, args.rate
    );
    let mut phases = Vec::new();
    for &phase in &args.phases {
        let measured = measure_phase(phase, args)?;
        println!(
            "phase {phase}: idle {:.0} % CPU, {:.0} MiB; under load {:.0} % CPU, {:.0} MiB ({:.0} answers/s 2xx, {} errors); infrastructure {:.0} % / {:.0} MiB idle, {:.0} % / {:.0} MiB under load",
            measured.idle.cpu_percent,
            measured.idle.memory_mib,
            measured.load.cpu_percent,
            measured.load.memory_mib,
            measured.goodput_per_s,
            measured.errors,
            measured.infra_idle.cpu_percent,
            measured.infra_idle.memory_mib,
            measured.infra_load.cpu_percent,
            measured.infra_load.memory_mib,
        );
        phases.push(measured);
    }
    let report = Report {
        machine,
        idle_s: args.idle.as_secs_f64(),
        load_s: args.load.as_secs_f64(),
        rate: args.rate,
        phases,
    };
    println!("\n{}", markdown(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn markdown(report: &Report) -> String {
    let mut out = String::from(
        "| phase | command | processes | idle CPU | idle memory | CPU at load | memory at load | PostgreSQL + Redis + Kafka at load |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for p in &report.phases {
        out += &format!(
            "| {} | `{}` | {} | {:.0} % | {:.0} MiB | {:.0} % | {:.0} MiB | {:.0} % CPU, {:.0} MiB |\n",
            p.phase,
            p.command,
            p.processes,
            p.idle.cpu_percent,
            p.idle.memory_mib,
            p.load.cpu_percent,
            p.load.memory_mib,
            p.infra_load.cpu_percent,
            p.infra_load.memory_mib,
        );
    }
    out
}

fn measure_phase(phase: u8, args: &FootprintArgs) -> anyhow::Result<PhaseFootprint> {
    ensure!(
        !services::port_open(3000),
        "something already listens on 127.0.0.1:3000: stop the phase that runs there (Ctrl-C), then run this again"
    );
    let (binary, all) = PHASES[usize::from(phase) - 1];
    let arguments: &[&str] = if all { &["all"] } else { &[] };
    let command = format!("cargo run -p {binary}{}", if all { " -- all" } else { "" });
    let dir = workspace_root()
        .join(".ferriseats/footprint")
        .join(format!("phase{phase}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::File::create(dir.join("phase.log"))?;
    println!("$ {command}   (logs in {})", dir.display());
    let mut child = Command::new(target_dir().join("debug").join(binary))
        .args(arguments)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {binary} (built?)"))?;
    let result = (|| {
        wait_for_menu(&mut child, &dir)?;
        // Start-up work (migrations, topic creation, first metadata) is not idling.
        std::thread::sleep(Duration::from_secs(5));
        let root = child.id();
        let idle_phase = Window::start(Some(root));
        let idle_infra = Window::start(None);
        let processes = proc_util::tree(root).len();
        let (idle, infra_idle) = sample_until(Instant::now() + args.idle, idle_phase, idle_infra);
        let load_phase = Window::start(Some(root));
        let load_infra = Window::start(None);
        let report = dir.join("load.json");
        let mut load = Command::new(target_dir().join("debug/phase4-chaos"))
            .args(["load", "--url", URL, "--seed", "1", "--rate"])
            .arg(args.rate.to_string())
            .arg("--duration")
            .arg(format!("{}ms", args.load.as_millis()))
            .arg("--json")
            .arg(&report)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("load.log"))?)
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting phase 4's load generator")?;
        let (load_usage, infra_load) =
            sample_until(Instant::now() + args.load, load_phase, load_infra);
        let status = load.wait()?;
        ensure!(
            status.success(),
            "the load generator failed ({status}); see {}",
            dir.join("load.log").display()
        );
        let answers: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
        let number = |path: &[&str]| {
            path.iter()
                .fold(&answers, |v, k| &v[k])
                .as_f64()
                .unwrap_or(f64::NAN)
        };
        Ok(PhaseFootprint {
            phase,
            command: command.clone(),
            processes,
            idle,
            load: load_usage,
            infra_idle,
            infra_load,
            goodput_per_s: number(&["goodput_per_s"]),
            errors: (number(&["totals", "server_error"]) + number(&["totals", "failed"])) as u64,
            p99_ms: number(&["latency", "p99_ms"]),
        })
    })();
    proc_util::stop_tree(&mut child);
    result
}

fn wait_for_menu(child: &mut Child, dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "it stopped ({status}) before answering; see {}",
                dir.join("phase.log").display()
            );
        }
        if matches!(http_get(URL, "/menu"), Ok((200, _))) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "no answer from {URL}/menu after 3 minutes; see {}",
                dir.join("phase.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// CPU ticks at the start of a window, per process, of a phase's tree (`Some(root)`)
/// or of the infrastructure (`None`).
#[derive(Debug)]
pub struct Window {
    root: Option<u32>,
    started: Instant,
    ticks: HashMap<u32, u64>,
    peak_kib: u64,
}

impl Window {
    pub fn start(root: Option<u32>) -> Window {
        let mut window = Window {
            root,
            started: Instant::now(),
            ticks: HashMap::new(),
            peak_kib: 0,
        };
        window.ticks = window
            .sample()
            .into_iter()
            .filter_map(|pid| Some((pid, cpu_ticks(pid)?)))
            .collect();
        window
    }

    fn pids(&self) -> Vec<u32> {
        match self.root {
            Some(root) => proc_util::tree(root),
            None => infrastructure(),
        }
    }

    /// Notes the memory held now (the peak is kept); the processes it looked at.
    pub fn sample(&mut self) -> Vec<u32> {
        let pids = self.pids();
        let held = pids.iter().copied().filter_map(memory_kib).sum();
        self.peak_kib = self.peak_kib.max(held);
        pids
    }

    /// The window's usage: ticks spent since the start by the processes alive now
    /// (a process started during the window counts from zero).
    pub fn finish(mut self) -> Usage {
        let spent: u64 = self
            .sample()
            .into_iter()
            .filter_map(|pid| {
                Some(cpu_ticks(pid)?.saturating_sub(self.ticks.get(&pid).copied().unwrap_or(0)))
            })
            .sum();
        let seconds = self.started.elapsed().as_secs_f64();
        Usage {
            cpu_percent: round1(100.0 * spent as f64 / TICKS_PER_SECOND / seconds),
            memory_mib: round1(self.peak_kib as f64 / 1024.0),
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn sample_until(deadline: Instant, mut a: Window, mut b: Window) -> (Usage, Usage) {
    while Instant::now() < deadline {
        std::thread::sleep(
            Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now())),
        );
        a.sample();
        b.sample();
    }
    (a.finish(), b.finish())
}

/// `USER_HZ`: the unit of `/proc/PID/stat`'s times, 100 on every Linux that matters
/// (`getconf CLK_TCK`).
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system time of `pid`, all its threads, in ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces: fields are counted after its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the state (field 3).
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The memory `pid` holds, KiB: its proportional set size (`Pss` in
/// `/proc/PID/smaps_rollup`: private pages, plus shared ones divided among the
/// processes sharing them), so that PostgreSQL's backends, which all map the same
/// shared buffers, add up to what the server really uses. `VmRSS` where `Pss` cannot
/// be read.
fn memory_kib(pid: u32) -> Option<u64> {
    let field = |file: &str, name: &str| -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    field("smaps_rollup", "Pss:").or_else(|| field("status", "VmRSS:"))
}

/// PostgreSQL's processes, Redis and the Kafka JVM(s), by command line.
fn infrastructure() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let comm = comm.trim();
            comm == "postgres"
                || comm.starts_with("redis-server")
                || (comm == "java"
                    && std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains("kafka.Kafka")))
        })
        .collect()
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or(String::from("?"), |kib| {
            format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0)
        });
    format!("{cores} cores, {memory}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_tree_counts_a_core_and_an_idle_one_nothing() {
        // A shell whose child spins, and a sleeping shell beside it: the spinner's
        // CPU belongs to the first tree only.
        let mut busy = Command::new("sh")
            .args(["-c", "while :; do :; done & wait"])
            .spawn()
            .unwrap();
        let mut idle = Command::new("sh")
            .args(["-c", "sleep 5 & wait"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let (b, i) = sample_until(
            Instant::now() + Duration::from_secs(2),
            Window::start(Some(busy.id())),
            Window::start(Some(idle.id())),
        );
        proc_util::stop_tree(&mut busy);
        proc_util::stop_tree(&mut idle);
        // A loaded test machine may give the spinner well under a full core.
        assert!(b.cpu_percent > 25.0, "the spinning tree used {b:?}");
        assert!(i.cpu_percent < 5.0, "the sleeping tree used {i:?}");
        assert!(b.memory_mib > 0.1 && i.memory_mib > 0.1, "{b:?} {i:?}");
    }

    #[test]
    fn the_stat_line_is_read_after_the_command_name() {
        // A command name with spaces and parentheses must not shift the fields.
        let stat = "4242 (tokio (worker) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 700 35 0 0 20 0 9 0 1 1 1";
        assert_eq!(stat_ticks(stat), Some(735));
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(memory_kib(me).unwrap() > 0);
    }
}
