//! `cargo xtask doctor` and the toolchain check every command makes first, run as a
//! newcomer runs them — with the machine's conditions injected, never changed: a
//! `RUSTC` that says it is 1.80, a `PATH` with no `java` on it, a `KAFKA_BROKERS`
//! where nothing listens. Nothing is uninstalled and no shared server is stopped.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

/// A directory of this test's own (removed when dropped).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A program that prints `says` and succeeds.
    fn program(&self, name: &str, says: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, format!("#!/bin/sh\necho '{says}'\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn xtask(args: &[&str], configure: impl FnOnce(&mut Command)) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args);
    configure(&mut cmd);
    cmd.output().unwrap()
}

#[test]
fn an_old_rust_stops_every_command_with_one_line_saying_what_to_run() {
    let scratch = Scratch::new("old-rustc");
    let rustc = scratch.program("rustc", "rustc 1.80.0 (051478957 2024-07-21)");
    let out = xtask(&["status"], |cmd| {
        cmd.env("RUSTC", &rustc);
    });
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing else ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("error: Rust 1.94 or newer is needed, this is 1.80.0: ")
            && (stderr.contains("run `rustup update stable`")
                || stderr.contains("https://rustup.rs")),
        "{stderr}"
    );
}

#[test]
fn a_new_enough_rust_lets_commands_run() {
    let scratch = Scratch::new("new-rustc");
    let rustc = scratch.program("rustc", "rustc 1.200.0 (abc 2040-01-01)");
    // `status` only looks (no side effects): it runs once the check has passed.
    let out = xtask(&["status"], |cmd| {
        cmd.env("RUSTC", &rustc);
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("postgresql"));
}

#[test]
fn doctor_without_java_or_a_broker_says_what_to_run_for_each() {
    // A PATH with nothing on it, so no `java`; and a broker address where nothing
    // listens, so Java is needed to start one.
    let scratch = Scratch::new("doctor-no-java");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = xtask(&["doctor"], |cmd| {
        cmd.env("PATH", &scratch.0)
            .env_remove("JAVA_HOME")
            .env_remove("RUSTC")
            .env("KAFKA_BROKERS", closed.to_string());
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let line = |what: &str| {
        stdout
            .lines()
            .find(|line| line[5..].starts_with(what))
            .unwrap_or_else(|| panic!("no {what} line in:\n{stdout}"))
            .to_owned()
    };
    let java = line("Java/Maven");
    assert!(
        java.starts_with("fix  Java/Maven  Apache Kafka needs Java 17 or newer")
            && java.contains("there is no `java` on PATH")
            && java.ends_with("then `cargo xtask up` again"),
        "{java}"
    );
    assert_eq!(
        line("Kafka "),
        format!(
            "fix  Kafka       cannot reach Kafka at {closed} (connection refused): start it with \
             `cargo xtask up`"
        )
    );
    assert!(line("C compiler").starts_with("fix  C compiler  no `cc` and `make` on PATH"));
    // One line per check: the eight of them, then the count on stderr.
    assert_eq!(stdout.lines().count(), 8, "{stdout}");
    assert!(
        stderr
            .trim_end()
            .ends_with("each `fix` line above says what to run"),
        "{stderr}"
    );
}
