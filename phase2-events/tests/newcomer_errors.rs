//! The first errors a newcomer meets in phase 2, met the way they meet them: the real
//! binary, one subcommand at a time, started with PostgreSQL, Redis or the Kafka
//! broker pointed at a port where nothing listens. Each must fail within seconds
//! with one line on stderr naming the server, its address and `cargo xtask up` —
//! the last line printed, even with `RUST_BACKTRACE` set — never a client library's
//! timeout.
//!
//! The servers the tests share are never touched: the missing one is a closed port
//! (the others are the shared PostgreSQL, for a database of each test's own, and
//! Redis), so nothing else's tests notice.

use common::testing::{Backend, TestDb, closed_port, run_to_failure};
use std::net::TcpListener;
use std::process::{Command, ExitStatus};
use std::time::Duration;

/// `phase2-events ARGS` with every listening address moved to a free port and the
/// topics in a namespace of their own; its exit status, stderr and how long it took.
/// Gives up (and stops it) after `limit`: it was meant to fail.
fn phase2(args: &[&str], limit: Duration) -> (ExitStatus, String, Duration) {
    let namespace = format!("newcomer-{}", uuid::Uuid::now_v7().simple());
    let mut command = Command::new(env!("CARGO_BIN_EXE_phase2-events"));
    command
        .args(args)
        .env("TOPIC_NAMESPACE", namespace)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("NOTIFICATION_ADDR", "127.0.0.1:0")
        .env("PROVIDER_ADDR", "127.0.0.1:0");
    run_to_failure(command, limit)
}

/// `args` fail within `limit` with exactly `line` (and nothing else) on stderr.
fn fails_with(args: &[&str], line: &str, limit: Duration) {
    let (status, stderr, took) = phase2(args, limit);
    assert!(!status.success(), "phase2-events {args:?} succeeded");
    assert_eq!(stderr, format!("error: {line}\n"), "phase2-events {args:?}");
    assert!(took < limit, "phase2-events {args:?} took {took:?}");
}

fn unreachable(server: &str, port: u16) -> String {
    format!(
        "cannot reach {server} at 127.0.0.1:{port} (connection refused): start it with \
         `cargo xtask up`"
    )
}

#[test]
fn postgres_not_running() {
    let port = closed_port();
    let url = |db: &str| format!("postgres://postgres:secret@127.0.0.1:{port}/{db}");
    let line = unreachable("PostgreSQL", port);
    let everything = [
        "--order-database-url",
        &url("orders"),
        "--payment-database-url",
        &url("payments"),
        "--inventory-database-url",
        &url("inventory"),
        "--delivery-database-url",
        &url("delivery"),
    ];
    let fast = Duration::from_secs(10);
    fails_with(&[&["all"], &everything[..]].concat(), &line, fast);
    fails_with(&[&["relay"], &everything[..]].concat(), &line, fast);
    fails_with(
        &["order", "--order-database-url", &url("orders")],
        &line,
        fast,
    );
    fails_with(
        &["payment", "--payment-database-url", &url("p")],
        &line,
        fast,
    );
    fails_with(
        &["inventory", "--inventory-database-url", &url("i")],
        &line,
        fast,
    );
    fails_with(
        &["delivery", "--delivery-database-url", &url("d")],
        &line,
        fast,
    );
}

#[test]
fn redis_not_running() {
    let port = closed_port();
    let redis = format!("redis://127.0.0.1:{port}");
    fails_with(
        &["notification", "--redis-url", &redis],
        &unreachable("Redis", port),
        Duration::from_secs(10),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_broker_not_running() {
    // Every service opens its database before it looks for the broker: give each a
    // real one (of this test's own), so the broker is what is missing.
    let mut dbs = Vec::new();
    for _ in 0..4 {
        dbs.push(TestDb::create(Backend::Postgres).await);
    }
    let port = closed_port();
    let brokers = format!("127.0.0.1:{port}");
    let line = unreachable("Kafka", port);
    let flags = [
        "--order-database-url",
        "--payment-database-url",
        "--inventory-database-url",
        "--delivery-database-url",
    ];
    let databases: Vec<String> = flags
        .iter()
        .zip(&dbs)
        .flat_map(|(flag, db)| [flag.to_string(), db.url.clone()])
        .collect();
    let runs: [&[&str]; 9] = [
        &["all"],
        &["order"],
        &["payment"],
        &["inventory"],
        &["notification"],
        &["delivery"],
        &["relay"],
        &["dlq", "list", "--topic", "orders"],
        &["dlq", "replay", "--topic", "orders"],
    ];
    let result = tokio::task::spawn_blocking(move || {
        for run in runs {
            let mut args = run.to_vec();
            args.extend(["--brokers", &brokers]);
            if run[0] != "dlq" {
                args.extend(databases.iter().map(String::as_str));
            }
            fails_with(&args, &line, Duration::from_secs(10));
        }
    })
    .await;
    for db in dbs {
        db.drop_database().await;
    }
    result.unwrap();
}

#[test]
fn a_broker_that_accepts_but_never_answers_is_reported_within_seconds() {
    // Connections complete in the kernel's backlog; nothing ever reads them.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let (status, stderr, took) = phase2(
        &["notification", "--brokers", &addr.to_string()],
        Duration::from_secs(40),
    );
    assert!(!status.success());
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with(&format!("error: cannot reach Kafka at {addr} ("))
            && stderr.ends_with("): start it with `cargo xtask up`\n"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    drop(silent);
}
