//! `cargo xtask reset [--exercises]`: a learner's machine back to a clean state in
//! seconds — the workshop's data gone, the services still running.
//!
//! What goes is what the phases and `cargo xtask` keep under their *default names*
//! ([`Targets::workshop`]), and nothing else: the test suite creates databases, topic
//! namespaces and Redis keys of its own for every test, on the same servers and
//! possibly at the same moment, and those are not reset's business.
//!
//! | where | what | how |
//! |---|---|---|
//! | PostgreSQL | phase 2's four databases (phases 3 and 4 run the same services), and the benchmarks' scratch databases an interrupted `cargo xtask bench` left | `DROP DATABASE`; the phases create and migrate them again when they start |
//! | PostgreSQL, database `postgres` | phase 1's tables, when it ran there (`DATABASE_URL=…/postgres`, as its README shows) | `DROP TABLE`; phase 1 migrates again when it starts |
//! | workspace root | phase 1's SQLite file `ferriseats-phase1.db` (its default) | deleted |
//! | Kafka | phase 2's topics `orders`, `payments`, `inventory`, `delivery`, each with its `.retry` and `.dlq` | `DeleteTopics` (`common_local::local_kafka::topics`); the consumer groups' offsets of those topics go with them |
//! | Redis | the notification service's keys, `ferriseats:notification:*` | `redis-cli --scan`, then `UNLINK` |
//! | `.ferriseats/` | run state: results of chaos runs, game days and rehearsals, logs; exercise progress only with `--exercises` | deleted, logs emptied — see [`STATE`] for every entry |
//!
//! Installed tools (mdBook, the virtual environments, the Go tools, Kafka's jars) and
//! the files of the servers `up` started are kept: installing them again takes
//! minutes and a network a workshop room may not have. The services keep running
//! (`cargo xtask down` stops them) — the phases need them right after a reset.
//!
//! A phase still connected to one of the databases would lose them under its feet:
//! reset then refuses, before touching anything, and says so. Otherwise every part is
//! tried even when one fails, and the command fails at the end if one did.
//!
//! The targets are data, not code paths: `--targets FILE` (hidden; a JSON
//! [`Targets`]) replaces the defaults, which is how `xtask/tests/reset.rs` resets
//! databases, topics, keys and a state directory of its own.

use crate::services::{self, State};
use crate::{kafka, postgres, process, redis};
use anyhow::{Context, bail, ensure};
use common_local::local_kafka::topics as kafka_topics;
use common_local::{endpoints, psql};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct ResetArgs {
    /// Also forget exercise progress (.ferriseats/exercises.json: revealed hints and
    /// last verdicts). Your own code in exercises/mine/ is kept either way.
    #[arg(long)]
    exercises: bool,
    /// Reset what this JSON file lists instead of the workshop's defaults (for tests).
    #[arg(long, hide = true, value_name = "FILE")]
    targets: Option<PathBuf>,
}

/// Everything reset removes. [`Targets::workshop`] is the workshop's; a test builds
/// its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Targets {
    /// Where to log in to PostgreSQL; [`Targets::tables`] are dropped in its database.
    pub database_url: String,
    /// Databases to drop.
    pub databases: Vec<String>,
    /// Tables to drop in the database of `database_url`.
    pub tables: Vec<String>,
    /// Kafka bootstrap servers (`host:port[,host:port…]`).
    pub brokers: String,
    /// Topics to delete.
    pub topics: Vec<String>,
    pub redis_url: String,
    /// Redis keys starting with one of these are deleted.
    pub redis_prefixes: Vec<String>,
    /// Files to delete (phase 1's SQLite database).
    pub files: Vec<PathBuf>,
    /// `.ferriseats/`, whose entries are handled as [`STATE`] says.
    pub state_dir: PathBuf,
}

/// Phase 2's databases, by service (`phase2-events/src/config.rs`); phases 3 and 4
/// run the same services with the same defaults.
const PHASE2_DATABASES: [&str; 4] = [
    "ferriseats_orders",
    "ferriseats_payments",
    "ferriseats_inventory",
    "ferriseats_delivery",
];

/// The benchmarks' databases (`phase4-chaos/src/bench/`): each run drops and creates
/// them, and drops them at its end; an interrupted run leaves them behind. (The chaos
/// scenarios, rehearsals and tests name theirs after the run, so they cannot be told
/// from a run under way: they are left alone.)
const BENCH_DATABASES: [&str; 10] = [
    "ferriseats_bench",
    "ferriseats_bench_orders",
    "ferriseats_bench_payments",
    "ferriseats_bench_inventory",
    "ferriseats_bench_delivery",
    "ferriseats_bench_sql",
    "ferriseats_bench4_orders",
    "ferriseats_bench4_payments",
    "ferriseats_bench4_inventory",
    "ferriseats_bench4_delivery",
];

/// Phase 1's tables (`phase1-monolith/migrations/`), and sqlx's record of the
/// migrations it ran: without it gone too, phase 1 would not create the others again.
const PHASE1_TABLES: [&str; 5] = [
    "menu_items",
    "orders",
    "order_items",
    "idempotency_keys",
    "_sqlx_migrations",
];

/// Phase 1's default database, `sqlite://ferriseats-phase1.db` (relative: in the
/// directory it runs in, the workspace root), with SQLite's write-ahead log files.
const PHASE1_SQLITE: [&str; 3] = [
    "ferriseats-phase1.db",
    "ferriseats-phase1.db-wal",
    "ferriseats-phase1.db-shm",
];

/// Phase 2's event topics outside any namespace (`phase2-events/src/flow.rs`); each
/// has a retry and a dead-letter topic (`consumer.rs`).
const PHASE2_TOPICS: [&str; 4] = ["orders", "payments", "inventory", "delivery"];

/// The notification service's Redis keys outside any namespace (`ferriseats:` then
/// the namespaced service name: `phase2-events/src/services/notification.rs`).
const REDIS_PREFIXES: [&str; 1] = ["ferriseats:notification:"];

impl Targets {
    /// The workshop's defaults, on the servers the phases use: PostgreSQL on
    /// 127.0.0.1:5432 (the phases' default URLs name it; `TEST_DATABASE_URL` is the
    /// tests'), and Kafka and Redis where `KAFKA_BROKERS` and `REDIS_URL` point, as for
    /// the phases.
    pub fn workshop() -> Targets {
        let owned = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        Targets {
            database_url: postgres::DEFAULT_URL.to_owned(),
            databases: PHASE2_DATABASES
                .iter()
                .chain(&BENCH_DATABASES)
                .map(|n| (*n).to_owned())
                .collect(),
            tables: owned(&PHASE1_TABLES),
            brokers: services::url(&kafka::SERVICE),
            topics: PHASE2_TOPICS
                .iter()
                .flat_map(|t| [(*t).to_owned(), format!("{t}.retry"), format!("{t}.dlq")])
                .collect(),
            redis_url: services::url(&redis::SERVICE),
            redis_prefixes: owned(&REDIS_PREFIXES),
            files: PHASE1_SQLITE
                .iter()
                .map(|f| process::workspace_root().join(f))
                .collect(),
            state_dir: State::dir(),
        }
    }
}

/// What reset does with an entry of `.ferriseats/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run state: deleted.
    Remove,
    /// A directory of logs: its files emptied (a running server keeps appending to
    /// its own, which deleting would only hide), its directories deleted.
    EmptyLogs,
    /// Exercise progress: deleted with `--exercises` only.
    Exercises,
    /// Installed tools and the running servers' own files: kept.
    Keep,
}

/// Every entry of `.ferriseats/` that xtask, the phases or the exercises make, and what
/// reset does with it. An entry not listed is left alone (and named, so that it can be
/// added here).
pub const STATE: &[(&str, Action)] = &[
    // Phase 4: each chaos scenario's and game day's results folder.
    ("runs", Action::Remove),
    // Phase 5: each rehearsal's results folder.
    ("rehearsals", Action::Remove),
    // `cargo xtask footprint`: each phase's logs, SQLite file and load report.
    ("footprint", Action::Remove),
    // Phase 4: the sealed answer of the last game day.
    ("gameday.json", Action::Remove),
    // The start and stop logs of xtask's servers, the Kafka nodes' output, and phase
    // 4's supervised processes (logs/phase4/).
    ("logs", Action::EmptyLogs),
    // `cargo run -p exercises`: revealed hints and last verdicts.
    ("exercises.json", Action::Exercises),
    // What `up` started: `down` needs it, and the services keep running.
    ("started.json", Action::Keep),
    // Kafka's jars (installed once from Maven Central) and the broker's storage, which
    // the running broker owns: its topics are deleted through the broker.
    ("kafka", Action::Keep),
    // The running Redis's pid file and log (it keeps no data on disk).
    ("redis", Action::Keep),
    // The running Prometheus's storage (`up --observability`).
    ("prometheus", Action::Keep),
    // Installed tools: mdBook (`cargo install`), Locust, Schemathesis and phase 5's
    // checkers (PyPI), actionlint and kustomize (`go install`), playwright-core (npm).
    ("cargo-tools", Action::Keep),
    ("locust-venv", Action::Keep),
    ("schemathesis-venv", Action::Keep),
    ("phase5-venv", Action::Keep),
    ("go-bin", Action::Keep),
    ("playwright", Action::Keep),
];

pub fn run(args: &ResetArgs) -> anyhow::Result<()> {
    let targets = match &args.targets {
        None => Targets::workshop(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a JSON reset target list", path.display()))?
        }
    };
    reset(&targets, args.exercises)
}

/// One part of a reset: lines saying what it removed.
type Part<'a> = &'a dyn Fn() -> anyhow::Result<Vec<String>>;

/// Resets `targets`; see the module docs.
pub fn reset(targets: &Targets, exercises: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    refuse_databases_in_use(targets)?;
    let parts: [(&str, Part); 5] = [
        ("postgresql", &|| reset_postgres(targets)),
        ("kafka", &|| reset_topics(targets)),
        ("redis", &|| reset_redis(targets)),
        ("files", &|| reset_files(&targets.files)),
        (".ferriseats", &|| {
            reset_state(&targets.state_dir, exercises)
        }),
    ];
    let mut failed = Vec::new();
    for (name, part) in parts {
        match part() {
            Ok(lines) => {
                for line in lines {
                    println!("reset: {name}: {line}");
                }
            }
            Err(err) => {
                eprintln!("reset: {name}: FAILED: {err:#}");
                failed.push(name);
            }
        }
    }
    println!(
        "reset: done in {:.1} s; the services keep running (`cargo xtask down` stops them)",
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!(
            "reset failed for: {} (the rest was reset; see above, then run it again)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// Database and table names are put into SQL, quoted: only plain names are accepted.
fn plain_name(name: &str) -> anyhow::Result<&str> {
    ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "{name:?} is not a plain database or table name (letters, digits, _)"
    );
    Ok(name)
}

/// `'a', 'b'` for an SQL `IN (…)`.
fn sql_list(names: &[String]) -> anyhow::Result<String> {
    let quoted: anyhow::Result<Vec<String>> = names
        .iter()
        .map(|n| plain_name(n).map(|n| format!("'{n}'")))
        .collect();
    Ok(quoted?.join(", "))
}

/// Logs in, or fails naming the server and what to run.
fn check_postgres(url: &str) -> anyhow::Result<()> {
    psql::check_url(url).with_context(|| {
        format!(
            "PostgreSQL is not reachable at {}: start it with `cargo xtask up`",
            endpoints::redact(url)
        )
    })
}

/// Fails, before anything is touched, if a process (a phase still running) is
/// connected to one of the databases. Nothing to check when PostgreSQL does not
/// answer: no phase is using it then (and [`reset_postgres`] says it is down).
fn refuse_databases_in_use(targets: &Targets) -> anyhow::Result<()> {
    if targets.databases.is_empty() || psql::check_url(&targets.database_url).is_err() {
        return Ok(());
    }
    let in_use = psql::query(
        &targets.database_url,
        &format!(
            "SELECT datname || ' (' || count(*) || ')' FROM pg_stat_activity \
             WHERE datname IN ({}) GROUP BY datname ORDER BY datname",
            sql_list(&targets.databases)?
        ),
    )?;
    if !in_use.is_empty() {
        bail!(
            "these databases have connections: {} — a phase (or a benchmark) is still running. \
             Stop it (Ctrl-C in its terminal), then run `cargo xtask reset` again. Nothing was reset.",
            in_use.lines().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// Drops the databases and the tables that exist.
fn reset_postgres(targets: &Targets) -> anyhow::Result<Vec<String>> {
    if targets.databases.is_empty() && targets.tables.is_empty() {
        return Ok(Vec::new());
    }
    let url = &targets.database_url;
    check_postgres(url)?;
    let mut lines = Vec::new();
    let existing = |sql: String| -> anyhow::Result<Vec<String>> {
        Ok(psql::query(url, &sql)?.lines().map(str::to_owned).collect())
    };
    if !targets.databases.is_empty() {
        let databases = existing(format!(
            "SELECT datname FROM pg_database WHERE datname IN ({}) ORDER BY datname",
            sql_list(&targets.databases)?
        ))?;
        for database in &databases {
            // One statement a call: DROP DATABASE cannot run in a transaction.
            psql::execute(
                url,
                &format!("DROP DATABASE IF EXISTS \"{}\"", plain_name(database)?),
            )?;
        }
        lines.push(removed("dropped databases", &databases));
    }
    if !targets.tables.is_empty() {
        let tables = existing(format!(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() \
             AND tablename IN ({}) ORDER BY tablename",
            sql_list(&targets.tables)?
        ))?;
        if !tables.is_empty() {
            let quoted: Vec<String> = tables.iter().map(|t| format!("\"{t}\"")).collect();
            // A phase 1 still running there holds no database of its own to refuse
            // on: give up after a while rather than wait for its locks forever.
            psql::execute(
                url,
                &format!(
                    "SET lock_timeout = '10s'; DROP TABLE IF EXISTS {} CASCADE",
                    quoted.join(", ")
                ),
            )?;
        }
        let database = url.rsplit('/').next().unwrap_or_default();
        let database = database.split('?').next().unwrap_or_default();
        lines.push(removed(
            &format!("dropped tables in database {database}"),
            &tables,
        ));
    }
    Ok(lines)
}

/// "dropped databases a, b" or "dropped databases: none there".
fn removed(what: &str, names: &[String]) -> String {
    if names.is_empty() {
        format!("{what}: none there")
    } else {
        format!("{what} {}", names.join(", "))
    }
}

/// How long the broker may take to commit the deletion.
const TOPIC_TIMEOUT: Duration = Duration::from_secs(30);

/// Deletes the topics through the broker.
fn reset_topics(targets: &Targets) -> anyhow::Result<Vec<String>> {
    if targets.topics.is_empty() {
        return Ok(Vec::new());
    }
    let results = kafka_topics::delete(&targets.brokers, &targets.topics, TOPIC_TIMEOUT)
        .with_context(|| {
            format!(
                "Kafka is not reachable at {}: start it with `cargo xtask up`",
                targets.brokers
            )
        })?;
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for (topic, code) in results
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>()
    {
        match code {
            0 => deleted.push(topic),
            kafka_topics::UNKNOWN_TOPIC_OR_PARTITION => {}
            _ => errors.push(format!(
                "{topic}: error {code} {}",
                kafka_topics::error_name(code)
            )),
        }
    }
    let line = removed("deleted topics", &deleted);
    if !errors.is_empty() {
        bail!("{line}; not deleted: {}", errors.join(", "));
    }
    Ok(vec![line])
}

/// Deletes the keys under the prefixes, with `redis-cli` (which comes with the
/// server's Debian package): `--scan` walks the keys without blocking the server as
/// `KEYS` would, `UNLINK` frees their memory in the background.
fn reset_redis(targets: &Targets) -> anyhow::Result<Vec<String>> {
    if targets.redis_prefixes.is_empty() {
        return Ok(Vec::new());
    }
    let url = &targets.redis_url;
    redis::check_url(url).with_context(|| {
        format!(
            "Redis is not reachable at {}: start it with `cargo xtask up`",
            endpoints::redact(url)
        )
    })?;
    ensure!(
        process::on_path("redis-cli"),
        "redis-cli is not installed (Debian: apt-get install redis-tools)"
    );
    let redis_cli = |args: &[&str]| -> anyhow::Result<String> {
        let out = process::output(
            Command::new("redis-cli").arg("-u").arg(url).args(args),
            Duration::from_secs(30),
        )?;
        ensure!(
            out.status.success(),
            "redis-cli {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let mut lines = Vec::new();
    for prefix in &targets.redis_prefixes {
        ensure!(
            !prefix.is_empty(),
            "an empty Redis key prefix would be every key"
        );
        let pattern = format!("{}*", glob_escape(prefix));
        let listed = redis_cli(&["--scan", "--pattern", &pattern])?;
        let mut keys: Vec<&str> = listed.lines().filter(|k| !k.is_empty()).collect();
        // SCAN may return a key twice.
        keys.sort_unstable();
        keys.dedup();
        for chunk in keys.chunks(500) {
            redis_cli(&[&["UNLINK"], chunk].concat())?;
        }
        lines.push(format!("deleted {} keys {pattern}", keys.len()));
    }
    Ok(lines)
}

/// `prefix` with Redis' glob characters escaped, so it matches only itself.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn reset_files(files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let mut deleted = Vec::new();
    for file in files {
        match std::fs::remove_file(file) {
            Ok(()) => deleted.push(shown(file)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("deleting {}", file.display())),
        }
    }
    Ok(vec![removed("deleted", &deleted)])
}

/// A path for messages: relative to the workspace when it is in it.
fn shown(path: &Path) -> String {
    let root = process::workspace_root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Handles each entry of the state directory as [`STATE`] says.
fn reset_state(dir: &Path, exercises: bool) -> anyhow::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(vec![format!(
                "{} does not exist: nothing to do",
                shown(dir)
            )]);
        }
        Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
    };
    let mut names: Vec<String> = entries
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let (mut removed, mut kept, mut progress, mut unknown) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for name in names {
        let path = dir.join(&name);
        let action = STATE.iter().find(|(n, _)| *n == name).map(|(_, a)| *a);
        match action {
            Some(Action::Remove) => removed.push(remove(&path, &name)?),
            Some(Action::Exercises) if exercises => removed.push(remove(&path, &name)?),
            Some(Action::Exercises) => progress.push(name),
            Some(Action::EmptyLogs) => removed.extend(empty_logs(&path, &name)?),
            Some(Action::Keep) => kept.push(name),
            None => unknown.push(name),
        }
    }
    let mut lines = vec![if removed.is_empty() {
        "no run state to remove".to_owned()
    } else {
        format!("removed {}", removed.join(", "))
    }];
    if !kept.is_empty() {
        lines.push(format!(
            "kept (installed tools, the servers' files): {}",
            kept.join(", ")
        ));
    }
    if !progress.is_empty() {
        lines.push(format!(
            "kept exercise progress: {} (--exercises forgets it)",
            progress.join(", ")
        ));
    }
    if !unknown.is_empty() {
        lines.push(format!(
            "left alone (not known to reset): {}",
            unknown.join(", ")
        ));
    }
    Ok(lines)
}

/// Deletes a file or a directory; says what it was and how large.
fn remove(path: &Path, name: &str) -> anyhow::Result<String> {
    let size = size_of(path);
    let is_dir = path.is_dir();
    if is_dir {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
    .with_context(|| format!("deleting {}", path.display()))?;
    let slash = if is_dir { "/" } else { "" };
    Ok(format!("{name}{slash} ({})", human(size)))
}

/// Empties every file of a log directory and deletes its directories; says so,
/// unless there was nothing in them.
fn empty_logs(dir: &Path, name: &str) -> anyhow::Result<Option<String>> {
    let size = size_of(dir);
    let (mut files, mut dirs) = (0, 0);
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            dirs += 1;
            std::fs::remove_dir_all(&path)
        } else {
            files += 1;
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|file| file.set_len(0))
        }
        .with_context(|| format!("emptying {}", path.display()))?;
    }
    if size == 0 && dirs == 0 {
        return Ok(None);
    }
    Ok(Some(format!(
        "{name}/ ({}: {files} file{} emptied, {dirs} director{} deleted)",
        human(size),
        if files == 1 { "" } else { "s" },
        if dirs == 1 { "y" } else { "ies" },
    )))
}

/// Bytes under `path` (symbolic links not followed).
fn size_of(path: &Path) -> u64 {
    let Ok(meta) = path.symlink_metadata() else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| size_of(&entry.path()))
        .sum()
}

/// `532 B`, `12.3 kB`, `1.5 GB`.
fn human(bytes: u64) -> String {
    let mut size = bytes as f64;
    for unit in ["B", "kB", "MB"] {
        if size < 1000.0 {
            return if unit == "B" {
                format!("{bytes} B")
            } else {
                format!("{size:.1} {unit}")
            };
        }
        size /= 1000.0;
    }
    format!("{size:.1} GB")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(path: &str) -> String {
        let path = process::workspace_root().join(path);
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    }

    #[test]
    fn the_databases_are_the_phases_defaults() {
        // Every database phase 2's configuration names, and nothing else of it.
        let config = source("phase2-events/src/config.rs");
        let named: Vec<&str> = config
            .split("{PG}/")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert_eq!(named, PHASE2_DATABASES, "phase2-events/src/config.rs");
        for database in BENCH_DATABASES {
            let bench = ["mod.rs", "phase2.rs", "phase4.rs"]
                .map(|f| source(&format!("phase4-chaos/src/bench/{f}")))
                .concat();
            assert!(bench.contains(&format!("\"{database}\"")), "{database}");
        }
    }

    #[test]
    fn every_table_of_phase_1_is_dropped() {
        let dir = process::workspace_root().join("phase1-monolith/migrations");
        let mut created = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sql") {
                let sql = std::fs::read_to_string(&path).unwrap();
                for rest in sql.split("CREATE TABLE ").skip(1) {
                    let rest = rest.strip_prefix("IF NOT EXISTS ").unwrap_or(rest);
                    created.push(rest.split([' ', '(']).next().unwrap().to_owned());
                }
            }
        }
        assert!(!created.is_empty());
        for table in &created {
            assert!(
                PHASE1_TABLES.contains(&table.as_str()),
                "{table} is not dropped"
            );
        }
        assert!(source("phase1-monolith/src/config.rs").contains("sqlite://ferriseats-phase1.db"));
    }

    #[test]
    fn the_topics_and_keys_are_phase_2s_outside_any_namespace() {
        let flow = source("phase2-events/src/flow.rs");
        for topic in PHASE2_TOPICS {
            assert!(flow.contains(&format!("name(\"{topic}\")")), "{topic}");
        }
        assert_eq!(flow.matches(": name(\"").count(), PHASE2_TOPICS.len());
        let consumer = source("phase2-events/src/consumer.rs");
        assert!(consumer.contains("format!(\"{topic}.retry\")"));
        assert!(consumer.contains("format!(\"{topic}.dlq\")"));
        let notification = source("phase2-events/src/services/notification.rs");
        assert!(
            notification.contains("format!(\"ferriseats:{}\", topics.namespaced(SERVICE.name()))")
        );
        assert!(notification.contains("Service::Notification"));
        let targets = Targets::workshop();
        assert_eq!(targets.topics.len(), 12);
        assert!(targets.topics.contains(&"payments.dlq".to_owned()));
    }

    #[test]
    fn installed_tools_and_the_servers_files_are_kept() {
        for kept in [
            "started.json",
            "kafka",
            "redis",
            "prometheus",
            "cargo-tools",
            "locust-venv",
            "phase5-venv",
            "go-bin",
        ] {
            assert!(STATE.contains(&(kept, Action::Keep)), "{kept}");
        }
        assert!(STATE.contains(&("exercises.json", Action::Exercises)));
        let mut names: Vec<&str> = STATE.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), STATE.len(), "an entry is listed twice");
    }

    #[test]
    fn names_put_into_sql_are_plain() {
        assert_eq!(
            sql_list(&["a_1".to_owned(), "b".to_owned()]).unwrap(),
            "'a_1', 'b'"
        );
        assert!(sql_list(&["x'; DROP DATABASE postgres; --".to_owned()]).is_err());
        assert!(plain_name("").is_err());
        assert_eq!(glob_escape("ferriseats:n*[x]"), "ferriseats:n\\*\\[x\\]");
        assert_eq!(human(532), "532 B");
        assert_eq!(human(12_345), "12.3 kB");
        assert_eq!(human(1_500_000_000), "1.5 GB");
    }
}
