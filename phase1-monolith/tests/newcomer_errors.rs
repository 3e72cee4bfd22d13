//! The first errors a newcomer meets, met the way they meet them: the real binary,
//! started against a server that is not there or a port that is taken. Each must
//! fail at once with one line on stderr that names the problem and what to run — and
//! that line must be the last one printed, even with `RUST_BACKTRACE` set (a
//! backtrace after it would push it off the screen).

use common::testing::{closed_port, run_to_failure};
use std::net::TcpListener;
use std::process::{Command, ExitStatus};
use std::time::Duration;

/// Runs phase 1 with `args` in a directory of its own (SQLite's default file lands
/// there, not in the repository); its exit status, stderr and how long it took.
fn phase1(args: &[&str]) -> (ExitStatus, String, Duration) {
    let dir = std::env::temp_dir().join(format!(
        "phase1-newcomer-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_phase1-monolith"));
    command
        .args(args)
        .current_dir(&dir)
        .env_remove("DATABASE_URL");
    let result = run_to_failure(command, Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[test]
fn postgres_not_running_is_one_line_naming_it_the_address_and_cargo_xtask_up() {
    let port = closed_port();
    let url = format!("postgres://postgres:secret@127.0.0.1:{port}/x");
    let (status, stderr, took) = phase1(&[
        "--database-url",
        &url,
        "--addr",
        "127.0.0.1:0",
        "--provider-addr",
        "127.0.0.1:0",
    ]);
    assert!(!status.success());
    assert_eq!(
        stderr,
        format!(
            "error: cannot reach PostgreSQL at 127.0.0.1:{port} (connection refused): start it \
             with `cargo xtask up` (or drop --database-url / DATABASE_URL: the default SQLite \
             file needs nothing)\n"
        )
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn a_port_in_use_is_one_line_naming_the_flag_that_moves_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, stderr, _) = phase1(&[
        "--database-url",
        "sqlite://orders.db",
        "--addr",
        &addr,
        "--provider-addr",
        "127.0.0.1:0",
    ]);
    assert!(!status.success());
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with(&format!("error: {addr} is already in use"))
            && stderr.contains("pass --addr with a free address"),
        "{stderr}"
    );
    drop(taken);
}
