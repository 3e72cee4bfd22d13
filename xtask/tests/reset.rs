//! `cargo xtask reset` against the real servers — on targets of this test's own.
//!
//! The suite runs many tests at once against the same PostgreSQL, Kafka and Redis,
//! and a learner's workshop data may be there too: this test never names the
//! workshop's defaults. It creates uniquely named databases, a table, topics, Redis
//! keys and a state directory, runs the `xtask` binary with `--targets FILE` (the
//! same reset, other targets), and checks that they are gone — while a database, a
//! table, a topic, a key and the installed-tool directories next to them are
//! untouched. Without a server it fails, naming it and `cargo xtask up`; it never
//! skips.

use common_local::endpoints::{redact, with_database};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The same DeleteTopics framing xtask uses; here for CreateTopics (to make topics,
/// and with `validate_only` to ask whether one exists).
#[allow(dead_code)]
use common_local::local_kafka::topics as kafka_topics;

const CREATE_TOPICS: i16 = 19;
const TOPIC_ALREADY_EXISTS: i16 = 36;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn admin_url() -> String {
    env_or(
        "TEST_DATABASE_URL",
        "postgres://postgres:postgres@127.0.0.1:5432/postgres",
    )
}

fn brokers() -> String {
    env_or("KAFKA_BROKERS", "127.0.0.1:9092")
}

fn redis_url() -> String {
    env_or("REDIS_URL", "redis://127.0.0.1:6379")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|err| panic!("running {cmd:?}: {err}"))
}

/// `psql URL -c SQL` (unaligned, no headers); its output, or `Err(stderr)`.
fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = run(Command::new("psql")
        .arg(url)
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5"));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

fn sql(url: &str, sql: &str) -> String {
    psql(url, sql).unwrap_or_else(|err| panic!("`{sql}`: {err}"))
}

fn redis_cli(args: &[&str]) -> String {
    let out = run(Command::new("redis-cli")
        .arg("-u")
        .arg(redis_url())
        .args(args));
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// CreateTopics v2 (one partition, one copy each): the error code of each topic.
fn create_topics(names: &[&str], validate_only: bool) -> anyhow::Result<Vec<(String, i16)>> {
    let mut body = Vec::new();
    kafka_topics::put_i32(&mut body, names.len() as i32);
    for name in names {
        kafka_topics::put_string(&mut body, name);
        kafka_topics::put_i32(&mut body, 1); // partitions
        body.extend_from_slice(&1_i16.to_be_bytes()); // replication factor
        kafka_topics::put_i32(&mut body, 0); // no manual assignment
        kafka_topics::put_i32(&mut body, 0); // no configuration
    }
    kafka_topics::put_i32(&mut body, 30_000);
    body.push(u8::from(validate_only));
    let response =
        kafka_topics::request(&brokers(), CREATE_TOPICS, 2, &body, Duration::from_secs(30))?;
    let mut input = kafka_topics::Input(&response);
    let _throttle_ms = input.i32()?;
    let mut results = Vec::new();
    for _ in 0..input.count()? {
        let name = input.string()?.unwrap_or_default();
        let code = input.i16()?;
        let _message = input.string()?;
        results.push((name, code));
    }
    Ok(results)
}

/// Does the topic exist? (A validate-only create answers TOPIC_ALREADY_EXISTS.)
fn topic_exists(name: &str) -> bool {
    match create_topics(&[name], true).unwrap()[..] {
        [(_, TOPIC_ALREADY_EXISTS)] => true,
        [(_, 0)] => false,
        ref other => panic!("asking whether {name} exists: {other:?}"),
    }
}

fn database_exists(name: &str) -> bool {
    sql(
        &admin_url(),
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
    ) == "1"
}

/// Fails (never skips) when a server the test needs does not answer.
fn require_servers() {
    let shown = redact(&admin_url());
    if let Err(err) = psql(&admin_url(), "SELECT 1") {
        panic!(
            "PostgreSQL is required for this test and is not reachable at {shown}: start it with \
             `cargo xtask up` ({err})"
        );
    }
    if let Err(err) = create_topics(&["ferriseats-reset-probe"], true) {
        panic!(
            "Kafka is required for this test and is not reachable at {}: start it with \
             `cargo xtask up` ({err:#})",
            brokers()
        );
    }
    let pong = Command::new("redis-cli")
        .arg("-u")
        .arg(redis_url())
        .arg("PING")
        .output();
    if !pong.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "PONG") {
        panic!(
            "Redis (and redis-cli) is required for this test and is not reachable at {}: start \
             it with `cargo xtask up`",
            redis_url()
        );
    }
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}_{nanos}", std::process::id())
}

/// Writes `text` to `dir/relative`, creating the directories.
fn write(dir: &Path, relative: &str, text: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `xtask reset --targets FILE [extra…]`.
fn reset(targets: &serde_json::Value, dir: &Path, extra: &[&str]) -> Output {
    let file = dir.join("targets.json");
    std::fs::write(&file, targets.to_string()).unwrap();
    run(Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("reset")
        .arg("--targets")
        .arg(&file)
        .args(extra))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What the test made and keeps until its end, removed even when it fails.
struct Leftovers {
    databases: Vec<String>,
    topics: Vec<String>,
    keys: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for database in &self.databases {
            let _ = psql(
                &admin_url(),
                &format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"),
            );
        }
        let _ = kafka_topics::delete(&brokers(), &self.topics, Duration::from_secs(30));
        for key in &self.keys {
            let _ = Command::new("redis-cli")
                .arg("-u")
                .arg(redis_url())
                .args(["DEL", key])
                .output();
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Entries of a state directory that reset must keep: installed tools, the servers'
/// own files, and something it does not know.
const KEPT: [&str; 9] = [
    "started.json",
    "kafka/4.3.2/lib/kafka_2.13-4.3.2.jar",
    "redis/redis.pid",
    "cargo-tools/bin/mdbook",
    "locust-venv/bin/locust",
    "phase5-venv/bin/hadolint",
    "go-bin/actionlint",
    "prometheus/wal/00000000",
    "somebody-elses.txt",
];

#[test]
fn reset_removes_its_targets_and_nothing_next_to_them() {
    require_servers();
    let id = unique();
    let db = |name: &str| format!("ferriseats_reset_test_{id}_{name}");
    let topic = |name: &str| format!("ferriseats-reset-test-{id}.{name}");
    let prefix = format!("ferriseats-reset-test-{id}:");
    let kept_key = format!("ferriseats-reset-test-{id}-kept");
    let root = std::env::temp_dir().join(format!("ferriseats-reset-test-{id}"));
    let state = root.join(".ferriseats");
    let _leftovers = Leftovers {
        databases: ["a", "b", "kept", "busy"].map(db).to_vec(),
        topics: ["orders", "orders.dlq", "kept"].map(topic).to_vec(),
        keys: vec![format!("{prefix}a"), format!("{prefix}b"), kept_key.clone()],
        dirs: vec![root.clone()],
    };

    // PostgreSQL: two databases to drop, one to keep with a table to drop and one to keep.
    for name in ["a", "b", "kept"] {
        sql(&admin_url(), &format!("CREATE DATABASE \"{}\"", db(name)));
    }
    let kept_url = with_database(&admin_url(), &db("kept"));
    sql(
        &kept_url,
        "CREATE TABLE reset_me (id int); CREATE TABLE keep_me (id int)",
    );
    // Kafka: two topics to delete, one to keep.
    let made = create_topics(
        &[&topic("orders"), &topic("orders.dlq"), &topic("kept")],
        false,
    )
    .unwrap();
    assert!(made.iter().all(|(_, code)| *code == 0), "{made:?}");
    // Redis: two keys under the prefix, one beside it.
    for key in [format!("{prefix}a"), format!("{prefix}b"), kept_key.clone()] {
        redis_cli(&["SET", &key, "1"]);
    }
    // Files: phase 1's SQLite database, and a state directory as the workshop leaves it.
    write(&root, "ferriseats-phase1.db", "SQLite format 3");
    write(&state, "runs/20250101-kill-service/verdict.json", "{}");
    write(&state, "rehearsals/20250101-base/report.json", "{}");
    write(&state, "gameday.json", "{}");
    write(
        &state,
        "logs/kafka-node-1.log",
        "a running broker's output\n",
    );
    write(
        &state,
        "logs/phase4/order-1.log",
        "a supervised process's output\n",
    );
    write(&state, "exercises.json", "{}");
    for kept in KEPT {
        write(&state, kept, "installed");
    }

    let targets = serde_json::json!({
        "database_url": kept_url,
        "databases": [db("a"), db("b"), db("never_made")],
        "tables": ["reset_me"],
        "brokers": brokers(),
        "topics": [topic("orders"), topic("orders.dlq"), topic("never-made")],
        "redis_url": redis_url(),
        "redis_prefixes": [prefix],
        "files": [root.join("ferriseats-phase1.db"), root.join("ferriseats-phase1.db-wal")],
        "state_dir": state,
    });
    let started = Instant::now();
    let out = reset(&targets, &root, &[]);
    let took = started.elapsed();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    println!("{said}(reset took {took:?})");

    // Gone: exactly the targets, and the run state.
    assert!(
        !database_exists(&db("a")) && !database_exists(&db("b")),
        "{said}"
    );
    assert!(
        said.contains(&format!("dropped databases {}, {}", db("a"), db("b"))),
        "{said}"
    );
    let tables = sql(
        &kept_url,
        "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'",
    );
    assert_eq!(tables, "keep_me");
    assert!(!topic_exists(&topic("orders")) && !topic_exists(&topic("orders.dlq")));
    assert!(
        said.contains(&format!("deleted topics {}", topic("orders"))),
        "{said}"
    );
    assert_eq!(
        redis_cli(&["EXISTS", &format!("{prefix}a"), &format!("{prefix}b")]),
        "0"
    );
    assert!(said.contains("deleted 2 keys"), "{said}");
    assert!(!root.join("ferriseats-phase1.db").exists());
    for gone in ["runs", "rehearsals", "gameday.json", "logs/phase4"] {
        assert!(!state.join(gone).exists(), "{gone} is still there:\n{said}");
    }
    // Emptied, not deleted: a running broker keeps writing to it.
    let log = std::fs::metadata(state.join("logs/kafka-node-1.log")).unwrap();
    assert_eq!(log.len(), 0);

    // Untouched: what stands next to the targets.
    assert!(database_exists(&db("kept")));
    assert!(topic_exists(&topic("kept")));
    assert_eq!(redis_cli(&["EXISTS", &kept_key]), "1");
    for kept in KEPT {
        assert!(state.join(kept).is_file(), "{kept} was removed:\n{said}");
    }
    assert!(
        said.contains("left alone (not known to reset): somebody-elses.txt"),
        "{said}"
    );
    // Exercise progress only goes when asked.
    assert!(state.join("exercises.json").is_file(), "{said}");

    // Again, with --exercises: nothing else left to do, and the progress goes.
    let out = reset(&targets, &root, &["--exercises"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(!state.join("exercises.json").exists(), "{said}");
    assert!(said.contains("dropped databases: none there"), "{said}");
    assert!(said.contains("deleted topics: none there"), "{said}");

    // A database in use (a phase still running): nothing is reset, and it says why.
    sql(&admin_url(), &format!("CREATE DATABASE \"{}\"", db("busy")));
    let busy_url = with_database(&admin_url(), &db("busy"));
    let mut holder = Command::new("psql")
        .arg(&busy_url)
        .args(["-X", "-q", "-c", "SELECT pg_sleep(60)"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while sql(
        &admin_url(),
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}'",
            db("busy")
        ),
    ) == "0"
    {
        assert!(
            Instant::now() < deadline,
            "psql never connected to {}",
            db("busy")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    write(&state, "gameday.json", "{}");
    let mut busy = targets.clone();
    busy["databases"] = serde_json::json!([db("busy")]);
    let out = reset(&busy, &root, &[]);
    let _ = holder.kill();
    let _ = holder.wait();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("still running") && said.contains(&db("busy")),
        "{said}"
    );
    assert!(database_exists(&db("busy")));
    assert!(
        state.join("gameday.json").is_file(),
        "reset went ahead:\n{said}"
    );
}

#[test]
fn a_server_that_does_not_answer_is_named_with_the_command_that_starts_it() {
    // No server needed: a closed port. The other parts still run.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = std::env::temp_dir().join(format!("ferriseats-reset-down-{}", unique()));
    let state = root.join(".ferriseats");
    let _leftovers = Leftovers {
        databases: Vec::new(),
        topics: Vec::new(),
        keys: Vec::new(),
        dirs: vec![root.clone()],
    };
    write(&state, "gameday.json", "{}");
    let targets = serde_json::json!({
        "database_url": format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres"),
        "databases": ["ferriseats_reset_never"],
        "tables": [],
        "brokers": format!("127.0.0.1:{port}"),
        "topics": ["ferriseats-reset-never"],
        "redis_url": format!("redis://127.0.0.1:{port}"),
        "redis_prefixes": ["ferriseats-reset-never:"],
        "files": [],
        "state_dir": state,
    });
    let out = reset(&targets, &root, &[]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    for service in ["PostgreSQL", "Kafka", "Redis"] {
        assert!(
            said.lines()
                .any(|line| line.contains(&format!("{service} is not reachable"))
                    && line.contains("`cargo xtask up`")),
            "{service}:\n{said}"
        );
    }
    assert!(!state.join("gameday.json").exists(), "{said}");
}
