//! `cargo xtask doctor`: a newcomer's first command. One line per thing the workshop
//! needs from this machine — the Rust toolchain, a C compiler, Java and Maven for
//! Kafka, Node.js and Python for the test suite's tools, and the three servers —
//! each `ok`, or `fix` with what to run.
//!
//! Every check reads the machine through [`Machine`] (the `PATH` to look in,
//! `JAVA_HOME`, `RUSTC`, whether we are root), never the process's environment
//! directly, so the tests run them against a `PATH` of their own: no `java` there, a
//! `rustc` that says it is 1.80. [`toolchain`] is also the first thing every other
//! xtask command does (`main`): with a Rust older than the workspace's `rust-version`,
//! cargo's own refusal comes after a page of output, where this is one line.

use crate::kafka;
use crate::process;
use crate::services::{self, SERVICES};
use common_local::endpoints::{self, Endpoint};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What the checks look at: the parts of the environment that decide them.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Where programs are looked for.
    pub path: OsString,
    /// `JAVA_HOME`: its `bin/java` wins over the one on `path` (as for Kafka).
    pub java_home: Option<OsString>,
    /// `RUSTC`: the compiler cargo would use instead of the `rustc` on `path`.
    pub rustc: Option<OsString>,
    /// Root needs no `sudo` in front of `apt-get`.
    pub root: bool,
    /// The workspace's `Cargo.toml`, for its `rust-version`.
    pub manifest: PathBuf,
    /// Where `cargo xtask up` keeps Kafka's jars (Maven is needed until they are there).
    pub kafka_lib: PathBuf,
}

impl Machine {
    /// This process's environment.
    pub fn from_env() -> Machine {
        let root = process::output(Command::new("id").arg("-u"), Duration::from_secs(5))
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
        Machine {
            path: std::env::var_os("PATH").unwrap_or_default(),
            java_home: std::env::var_os("JAVA_HOME").filter(|home| !home.is_empty()),
            rustc: std::env::var_os("RUSTC").filter(|rustc| !rustc.is_empty()),
            root,
            manifest: process::workspace_root().join("Cargo.toml"),
            kafka_lib: common_local::local_kafka::lib_dir(),
        }
    }

    /// The first `program` on [`Machine::path`].
    pub fn find(&self, program: &str) -> Option<PathBuf> {
        std::env::split_paths(&self.path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    }

    /// `program args…` with [`Machine::path`] as its `PATH`; its stdout and stderr,
    /// or `None` if it cannot be run or fails.
    fn run(&self, program: &Path, args: &[&str]) -> Option<String> {
        let mut cmd = Command::new(program);
        cmd.args(args).env("PATH", &self.path);
        let out = process::output(&mut cmd, Duration::from_secs(30)).ok()?;
        out.status.success().then(|| {
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr)
        })
    }

    /// `sudo ` unless we are root.
    fn sudo(&self) -> &'static str {
        if self.root { "" } else { "sudo " }
    }

    /// How to install Debian's `packages` here, as a command to run, or (without
    /// apt-get) to install `otherwise` with the system's package manager.
    pub fn install_command(&self, packages: &[&str], otherwise: &str) -> String {
        if self.find("apt-get").is_some() {
            format!(
                "run `{}apt-get install {}`",
                self.sudo(),
                packages.join(" ")
            )
        } else {
            format!("install {otherwise} with your system's package manager")
        }
    }
}

/// A version `major.minor.patch` (`1.94` is `1.94.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// `1.94`, `1.94.1`, `1.96.0-nightly`.
    pub fn parse(text: &str) -> Option<Version> {
        let core = text.trim().split(['-', '+', ' ']).next()?;
        let mut parts = core.split('.').map(str::parse::<u32>);
        let major = parts.next()?.ok()?;
        let minor = parts.next()?.ok()?;
        let patch = parts.next().unwrap_or(Ok(0)).ok()?;
        Some(Version(major, minor, patch))
    }

    /// What `rustc --version` prints: `rustc 1.88.0 (6b00bc388 2025-06-23)`.
    pub fn of_rustc(output: &str) -> Option<Version> {
        Version::parse(output.trim().strip_prefix("rustc ")?)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The `rust-version` of `[workspace.package]` in the workspace's `Cargo.toml`.
pub fn workspace_rust_version(manifest: &str) -> Option<Version> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if in_package
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "rust-version"
        {
            return Version::parse(value.trim().trim_matches('"'));
        }
    }
    None
}

/// What the toolchain check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Toolchain {
    /// `1.95.0 (1.94 or newer is needed)`.
    NewEnough(String),
    /// The one line: "Rust 1.94 or newer is needed, this is 1.88.0: run `rustup
    /// update stable`". Every command but `doctor` stops here.
    TooOld(String),
    /// Nothing to compare (no `rustc` to ask, no version in its answer, no
    /// `rust-version`): `doctor` says so and how to get Rust; other commands carry on
    /// and let cargo speak.
    Unknown(String),
}

/// The toolchain against the workspace's `rust-version`. `found` is what
/// `rustc --version` printed.
pub fn compare_toolchain(needed: Version, found: &str, rustup: bool) -> Toolchain {
    let Some(version) = Version::of_rustc(found) else {
        return Toolchain::Unknown(format!(
            "`rustc --version` said {:?}, not a version: install Rust {} or newer from https://rustup.rs",
            found.trim(),
            short(needed)
        ));
    };
    if version >= needed {
        return Toolchain::NewEnough(format!("{version} ({} or newer is needed)", short(needed)));
    }
    let fix = if rustup {
        "run `rustup update stable`".to_owned()
    } else {
        "install a current Rust with rustup (https://rustup.rs); this rustc is not rustup's"
            .to_owned()
    };
    Toolchain::TooOld(format!(
        "Rust {} or newer is needed, this is {version}: {fix}",
        short(needed)
    ))
}

/// `1.94.0` as the workspace writes it, `1.94`.
fn short(version: Version) -> String {
    match version {
        Version(major, minor, 0) => format!("{major}.{minor}"),
        other => other.to_string(),
    }
}

/// The toolchain of `machine` (`RUSTC`, else the `rustc` on its `PATH`) against the
/// `rust-version` of its workspace.
pub fn toolchain(machine: &Machine) -> Toolchain {
    let Some(needed) = std::fs::read_to_string(&machine.manifest)
        .ok()
        .as_deref()
        .and_then(workspace_rust_version)
    else {
        return Toolchain::Unknown(format!(
            "{} names no rust-version to compare with",
            machine.manifest.display()
        ));
    };
    let rustc = match &machine.rustc {
        Some(rustc) => Some(PathBuf::from(rustc)),
        None => machine.find("rustc"),
    };
    let Some(rustc) = rustc else {
        return Toolchain::Unknown(format!(
            "no `rustc` on PATH: install Rust {} or newer from https://rustup.rs",
            short(needed)
        ));
    };
    let Some(found) = machine.run(&rustc, &["--version"]) else {
        return Toolchain::Unknown(format!(
            "`{} --version` fails: install Rust {} or newer from https://rustup.rs",
            rustc.display(),
            short(needed)
        ));
    };
    compare_toolchain(needed, &found, machine.find("rustup").is_some())
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// What is checked: "Rust", "C compiler", "PostgreSQL"…
    pub what: &'static str,
    /// `Ok(what was found)` or `Err(what to do)`.
    pub outcome: Result<String, String>,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            Ok(found) => write!(f, "ok   {:<11} {found}", self.what),
            Err(fix) => write!(f, "fix  {:<11} {fix}", self.what),
        }
    }
}

/// Is a server of the local set-up there? `Ok(where)` or `Err(the line to show)`.
pub type Probe<'a> = &'a dyn Fn(&'static Endpoint) -> Result<String, String>;

/// Every check, in the order a newcomer needs them.
pub fn checks(machine: &Machine, probe: Probe) -> Vec<Line> {
    let mut lines = vec![
        Line {
            what: "Rust",
            outcome: match toolchain(machine) {
                Toolchain::NewEnough(found) => Ok(found),
                Toolchain::TooOld(fix) | Toolchain::Unknown(fix) => Err(fix),
            },
        },
        Line {
            what: "C compiler",
            outcome: c_compiler(machine),
        },
        Line {
            what: "Java/Maven",
            outcome: java_and_maven(machine, probe),
        },
        Line {
            what: "Node.js",
            outcome: programs(
                machine,
                &["node", "npm"],
                &["nodejs", "npm"],
                "the order page's browser test in `cargo xtask test`",
            ),
        },
        Line {
            what: "Python",
            outcome: python(machine),
        },
    ];
    for endpoint in [&endpoints::POSTGRES, &endpoints::REDIS, &endpoints::KAFKA] {
        lines.push(Line {
            what: endpoint.title,
            outcome: probe(endpoint),
        });
    }
    lines
}

fn c_compiler(machine: &Machine) -> Result<String, String> {
    programs(
        machine,
        &["cc", "make"],
        &["build-essential"],
        "the bundled SQLite and librdkafka are compiled from source",
    )
}

/// Each of `programs` on `PATH`, or the line naming what is missing and the Debian
/// `packages` that bring them.
fn programs(
    machine: &Machine,
    programs: &[&str],
    packages: &[&str],
    why: &str,
) -> Result<String, String> {
    let missing: Vec<String> = programs
        .iter()
        .filter(|program| machine.find(program).is_none())
        .map(|program| format!("`{program}`"))
        .collect();
    if missing.is_empty() {
        let found: Vec<String> = programs.iter().map(|p| p.to_string()).collect();
        return Ok(format!("{} ({why})", found.join(", ")));
    }
    let missing = missing.join(" and ");
    Err(format!(
        "no {missing} on PATH ({why}): {}",
        machine.install_command(packages, &missing)
    ))
}

/// python3 with `venv` and `ensurepip` (Debian splits them into python3-venv): the
/// test suite puts Schemathesis, Locust and phase 5's checkers in virtual
/// environments.
fn python(machine: &Machine) -> Result<String, String> {
    let why = "virtual environments for the test suite's Python tools";
    let Some(python) = machine.find("python3") else {
        return Err(format!(
            "no `python3` on PATH ({why}): {}",
            machine.install_command(&["python3", "python3-venv"], "Python 3")
        ));
    };
    match machine.run(&python, &["-c", "import venv, ensurepip"]) {
        Some(_) => Ok(format!("python3 with venv ({why})")),
        None => Err(format!(
            "{} cannot make virtual environments ({why}): {}",
            python.display(),
            machine.install_command(&["python3-venv"], "Python's venv module")
        )),
    }
}

/// Java 17+ (and Maven until Kafka's jars are fetched), unless a broker already
/// answers: then whoever runs it has what it needs.
fn java_and_maven(machine: &Machine, probe: Probe) -> Result<String, String> {
    let jars = common_local::local_kafka::installed(&machine.kafka_lib);
    let lacks = kafka::lacking(machine, !jars);
    if lacks.is_empty() {
        let java = kafka::java_on(machine).map(|java| {
            let major = common_local::local_kafka::java_major(&java).unwrap_or_default();
            format!("{major} ({})", java.display())
        });
        let maven = if jars {
            format!(
                "Kafka {}'s jars installed",
                common_local::local_kafka::VERSION
            )
        } else {
            "Maven to fetch Kafka's jars".to_owned()
        };
        return Ok(format!(
            "Java {}, {maven} (Apache Kafka for `cargo xtask up`)",
            java.unwrap_or_default()
        ));
    }
    if let Ok(there) = probe(&endpoints::KAFKA) {
        return Ok(format!(
            "not needed while a broker answers ({there}); `cargo xtask up` would need them to start one"
        ));
    }
    Err(kafka::lack_line(&lacks, machine, None))
}

/// The real servers: quick TCP look first (the one line when nothing listens), then
/// xtask's own check (a login, a PING, ApiVersions).
fn probe_service(endpoint: &'static Endpoint) -> Result<String, String> {
    let service = SERVICES
        .iter()
        .find(|service| service.name == endpoint.name)
        .expect("every endpoint checked is a service of `up`");
    let url = services::url(service);
    endpoint
        .reach(&url, Duration::from_secs(2))
        .map_err(|unreachable| unreachable.to_string())?;
    let address = endpoint.address(&url);
    (service.check_url)(&url).map_err(|err| {
        let why = format!("{err:#}");
        format!(
            "{} at {address} answers, but: {}",
            endpoint.title,
            why.split_whitespace().collect::<Vec<_>>().join(" ")
        )
    })?;
    Ok(format!("answers at {address}"))
}

/// `cargo xtask doctor`.
pub fn run() -> anyhow::Result<()> {
    let lines = checks(&Machine::from_env(), &probe_service);
    for line in &lines {
        println!("{line}");
    }
    let fixes = lines.iter().filter(|line| line.outcome.is_err()).count();
    if fixes > 0 {
        anyhow::bail!(
            "{fixes} thing{} to fix: each `fix` line above says what to run",
            if fixes == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// Used by `main` before any command but `doctor`: the one line when the toolchain is
/// too old, then exit.
pub fn refuse_old_toolchain() -> Option<String> {
    match toolchain(&Machine::from_env()) {
        Toolchain::TooOld(line) => Some(line),
        Toolchain::NewEnough(_) | Toolchain::Unknown(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A directory of fake programs: each a shell script printing its text (to
    /// stderr, as `java -version` does) and exiting with its status.
    struct FakeBin(PathBuf);

    impl FakeBin {
        fn new() -> FakeBin {
            let dir = std::env::temp_dir().join(format!(
                "xtask-doctor-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            FakeBin(dir)
        }

        fn program(&self, name: &str, says: &str, status: i32) -> &Self {
            let path = self.0.join(name);
            std::fs::write(
                &path,
                format!("#!/bin/sh\necho '{says}' >&2\nexit {status}\n"),
            )
            .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            self
        }

        fn machine(&self, root: bool) -> Machine {
            let manifest = self.0.join("Cargo.toml");
            std::fs::write(
                &manifest,
                "[workspace]\nmembers = []\n\n[workspace.package]\nedition = \"2024\"\nrust-version = \"1.94\"\n",
            )
            .unwrap();
            Machine {
                // Only the fakes: nothing of the host's (the scripts' `#!/bin/sh` is a
                // path, not looked up).
                path: self.0.clone().into_os_string(),
                java_home: None,
                rustc: None,
                root,
                manifest,
                kafka_lib: self.0.join("no-kafka-here"),
            }
        }
    }

    impl Drop for FakeBin {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert_eq!(Version::parse("1.94"), Some(Version(1, 94, 0)));
        assert_eq!(
            Version::of_rustc("rustc 1.96.0-nightly (abc 2026-05-01)"),
            Some(Version(1, 96, 0))
        );
        assert!(
            Version(1, 100, 0) > Version(1, 94, 0),
            "not compared as text"
        );
        assert_eq!(Version::of_rustc("cargo 1.95.0"), None);
    }

    #[test]
    fn the_workspace_rust_version_is_read_from_workspace_package() {
        let manifest = "[workspace]\nmembers = []\n[package]\nrust-version = \"1.10\"\n\
                        [workspace.package]\nedition = \"2024\"\nrust-version = \"1.94\"\n";
        assert_eq!(workspace_rust_version(manifest), Some(Version(1, 94, 0)));
        let real = std::fs::read_to_string(process::workspace_root().join("Cargo.toml")).unwrap();
        assert!(
            workspace_rust_version(&real).is_some(),
            "the real Cargo.toml has one"
        );
    }

    #[test]
    fn an_old_toolchain_is_one_line_naming_both_versions_and_the_command() {
        let needed = Version(1, 94, 0);
        assert_eq!(
            compare_toolchain(needed, "rustc 1.88.0 (6b00bc388 2025-06-23)\n", true),
            Toolchain::TooOld(
                "Rust 1.94 or newer is needed, this is 1.88.0: run `rustup update stable`"
                    .to_owned()
            )
        );
        assert_eq!(
            compare_toolchain(needed, "rustc 1.94.0 (abc 2026-03-01)", true),
            Toolchain::NewEnough("1.94.0 (1.94 or newer is needed)".to_owned())
        );
        assert_eq!(
            compare_toolchain(needed, "rustc 1.95.1", true),
            Toolchain::NewEnough("1.95.1 (1.94 or newer is needed)".to_owned())
        );
        let Toolchain::TooOld(without_rustup) = compare_toolchain(needed, "rustc 1.80.0", false)
        else {
            panic!("1.80 is too old");
        };
        assert!(
            without_rustup.contains("https://rustup.rs"),
            "{without_rustup}"
        );
        assert!(matches!(
            compare_toolchain(needed, "something else", true),
            Toolchain::Unknown(_)
        ));
    }

    #[test]
    fn the_toolchain_is_asked_on_the_machines_path_or_rustc() {
        let bin = FakeBin::new();
        bin.program("rustc", "rustc 1.80.0 (abc 2024-07-21)", 0);
        let mut machine = bin.machine(false);
        assert_eq!(
            toolchain(&machine),
            Toolchain::TooOld(
                "Rust 1.94 or newer is needed, this is 1.80.0: install a current Rust with rustup \
                 (https://rustup.rs); this rustc is not rustup's"
                    .to_owned()
            )
        );
        bin.program("rustup", "", 0);
        assert_eq!(
            toolchain(&machine),
            Toolchain::TooOld(
                "Rust 1.94 or newer is needed, this is 1.80.0: run `rustup update stable`"
                    .to_owned()
            )
        );
        // RUSTC wins over PATH, as it does for cargo.
        bin.program("new-rustc", "rustc 1.99.0 (abc 2027-01-01)", 0);
        machine.rustc = Some(bin.0.join("new-rustc").into());
        assert_eq!(
            toolchain(&machine),
            Toolchain::NewEnough("1.99.0 (1.94 or newer is needed)".to_owned())
        );
        // No rustc at all: nothing to compare, said with the way to get one.
        machine.rustc = None;
        std::fs::remove_file(bin.0.join("rustc")).unwrap();
        assert_eq!(
            toolchain(&machine),
            Toolchain::Unknown(
                "no `rustc` on PATH: install Rust 1.94 or newer from https://rustup.rs".to_owned()
            )
        );
    }

    #[test]
    fn doctor_says_what_to_run_for_each_missing_piece() {
        let bin = FakeBin::new();
        bin.program("rustc", "rustc 1.95.0 (abc 2026-04-14)", 0)
            .program("rustup", "", 0)
            .program("apt-get", "", 0)
            .program("cc", "", 0)
            .program("java", "openjdk version \"11.0.22\" 2024-01-16", 0)
            .program("node", "", 0)
            .program("python3", "No module named 'ensurepip'", 1);
        let machine = bin.machine(false);
        let down = |endpoint: &'static Endpoint| {
            Err(endpoint
                .unreachable(endpoint.address(endpoint.default))
                .because("connection refused")
                .to_string())
        };
        let lines = checks(&machine, &down);
        let text: Vec<String> = lines.iter().map(Line::to_string).collect();
        let java = bin.0.join("java");
        assert_eq!(
            text,
            [
                "ok   Rust        1.95.0 (1.94 or newer is needed)".to_owned(),
                "fix  C compiler  no `make` on PATH (the bundled SQLite and librdkafka are compiled \
                 from source): run `sudo apt-get install build-essential`"
                    .to_owned(),
                format!(
                    "fix  Java/Maven  Apache Kafka needs Java 17 or newer and Maven, and {} is Java 11 \
                     and there is no `mvn` on PATH: run `sudo apt-get install openjdk-17-jre-headless \
                     maven` (or point JAVA_HOME at a Java 17 or newer), then `cargo xtask up` again",
                    java.display()
                ),
                "fix  Node.js     no `npm` on PATH (the order page's browser test in `cargo xtask \
                 test`): run `sudo apt-get install nodejs npm`"
                    .to_owned(),
                format!(
                    "fix  Python      {} cannot make virtual environments (virtual environments for \
                     the test suite's Python tools): run `sudo apt-get install python3-venv`",
                    bin.0.join("python3").display()
                ),
                "fix  PostgreSQL  cannot reach PostgreSQL at 127.0.0.1:5432 (connection refused): \
                 start it with `cargo xtask up`"
                    .to_owned(),
                "fix  Redis       cannot reach Redis at 127.0.0.1:6379 (connection refused): start \
                 it with `cargo xtask up`"
                    .to_owned(),
                "fix  Kafka       cannot reach Kafka at 127.0.0.1:9092 (connection refused): start \
                 it with `cargo xtask up`"
                    .to_owned(),
            ]
        );
    }

    #[test]
    fn doctor_is_all_ok_on_a_complete_machine() {
        let bin = FakeBin::new();
        bin.program("rustc", "rustc 1.95.0 (abc 2026-04-14)", 0)
            .program("cc", "", 0)
            .program("make", "", 0)
            .program("java", "openjdk version \"17.0.15\" 2025-04-15", 0)
            .program("mvn", "", 0)
            .program("node", "", 0)
            .program("npm", "", 0)
            .program("python3", "", 0);
        let machine = bin.machine(true);
        let up = |endpoint: &'static Endpoint| {
            Ok(format!("answers at {}", endpoint.address(endpoint.default)))
        };
        let lines = checks(&machine, &up);
        let fixes: Vec<String> = lines
            .iter()
            .filter(|line| line.outcome.is_err())
            .map(Line::to_string)
            .collect();
        assert!(fixes.is_empty(), "{fixes:#?}");
        assert_eq!(
            lines.last().unwrap().to_string(),
            "ok   Kafka       answers at 127.0.0.1:9092"
        );
    }

    #[test]
    fn java_and_maven_not_needed_while_a_broker_answers() {
        let bin = FakeBin::new();
        bin.program("apt-get", "", 0);
        let machine = bin.machine(true); // no java, no mvn
        let up =
            |endpoint: &'static Endpoint| Ok(format!("at {}", endpoint.address(endpoint.default)));
        let line = java_and_maven(&machine, &up).unwrap();
        assert!(
            line.starts_with("not needed while a broker answers"),
            "{line}"
        );
        let down = |_: &'static Endpoint| Err("down".to_owned());
        let fix = java_and_maven(&machine, &down).unwrap_err();
        assert!(
            fix.starts_with("Apache Kafka needs Java 17 or newer")
                && fix.contains("there is no `java` on PATH")
                && fix.contains("install openjdk-17-jre-headless"),
            "{fix}"
        );
        assert!(!fix.contains("sudo"), "root needs no sudo: {fix}");
        std::fs::remove_file(bin.0.join("apt-get")).unwrap();
        let elsewhere = java_and_maven(&machine, &down).unwrap_err();
        assert!(
            elsewhere.ends_with(
                "install Java 17 or newer and Maven with your system's package manager, \
                 then `cargo xtask up` again"
            ),
            "{elsewhere}"
        );
    }

    #[test]
    fn kafkas_prerequisites_are_one_line_with_the_install_that_failed() {
        use kafka::Lack;
        let bin = FakeBin::new();
        bin.program("apt-get", "", 0);
        let machine = bin.machine(true);
        assert_eq!(
            kafka::lack_line(&[Lack::Maven], &machine, None),
            "Apache Kafka needs Maven (once, to fetch its jars from Maven Central), and there is \
             no `mvn` on PATH: run `apt-get install maven`, then `cargo xtask up` again"
        );
        assert_eq!(
            kafka::lack_line(
                &[Lack::Java, Lack::Maven],
                &machine,
                Some(
                    "installing openjdk-17-jre-headless failed: `apt-get install` exited with 100"
                )
            ),
            "Apache Kafka needs Java 17 or newer and Maven, and there is no `java` on PATH (or in \
             $JAVA_HOME/bin) and there is no `mvn` on PATH (installing openjdk-17-jre-headless \
             failed: `apt-get install` exited with 100): run `apt-get install \
             openjdk-17-jre-headless maven`, then `cargo xtask up` again"
        );
        // JAVA_HOME wins over PATH, as for the broker itself.
        let home = bin.0.join("jdk17");
        std::fs::create_dir_all(home.join("bin")).unwrap();
        bin.program(
            "jdk17/bin/java",
            "openjdk version \"17.0.15\" 2025-04-15",
            0,
        );
        bin.program("java", "openjdk version \"11.0.22\" 2024-01-16", 0);
        let mut machine = machine;
        assert!(matches!(
            &kafka::lacking(&machine, false)[..],
            [Lack::OldJava {
                major: Some(11),
                ..
            }]
        ));
        machine.java_home = Some(home.into_os_string());
        assert_eq!(kafka::lacking(&machine, false), []);
    }
}
