//! Test harness shared by the phases' integration tests (feature `testing`).
//!
//! [`TestDb`] gives each test a database of its own — a temporary SQLite file, or a
//! new PostgreSQL database on the server named by `TEST_DATABASE_URL` — so tests run
//! in parallel without seeing each other's rows. When PostgreSQL is unreachable the
//! test fails with a message naming it and `cargo xtask up`; it never skips.
//!
//! [`LogBuffer`] keeps a subscriber's log output in memory, for tests that look at
//! what was logged.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests use: `TEST_DATABASE_URL`, or the local default.
pub fn postgres_admin_url() -> String {
    crate::endpoints::POSTGRES.url()
}

/// A database that exists for one test only.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    /// PostgreSQL: (admin url, database name) to drop afterwards.
    pg: Option<(String, String)>,
}

impl TestDb {
    pub async fn create(backend: Backend) -> TestDb {
        let name = format!("ferriseats_test_{}", uuid::Uuid::now_v7().simple());
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                TestDb {
                    url: format!("sqlite://{}", path.display()),
                    backend,
                    pg: None,
                }
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let pool = crate::db::connect(&admin, 1).await.unwrap_or_else(|err| {
                    panic!(
                        "PostgreSQL is required for this test and is not reachable at {}: {err:#}\n\
                         Start it with `cargo xtask up` (or point TEST_DATABASE_URL at a server).",
                        crate::db::redact(&admin)
                    )
                });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&pool)
                    .await
                    .expect("CREATE DATABASE on the test server");
                pool.close().await;
                let url = crate::db::with_database(&admin, &name);
                TestDb {
                    url,
                    backend,
                    pg: Some((admin, name)),
                }
            }
        }
    }

    pub async fn drop_database(self) {
        match self.pg {
            Some((admin, name)) => {
                if let Ok(pool) = crate::db::connect(&admin, 1).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                    pool.close().await;
                }
            }
            None => {
                let path = self.url.trim_start_matches("sqlite://");
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{path}{suffix}"));
                }
            }
        }
    }
}

/// Log output kept in memory: give a clone to a `tracing_subscriber::fmt` layer (or
/// subscriber) as its writer, and read what it wrote with [`LogBuffer::contents`].
/// Clones share one buffer.
#[derive(Debug, Clone, Default)]
pub struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuffer {
    /// Everything written so far.
    pub fn contents(&self) -> String {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes).expect("log output is UTF-8")
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'w self) -> LogBuffer {
        self.clone()
    }
}

/// A port nothing listens on: bound by the OS, then let go.
pub fn closed_port() -> u16 {
    crate::local_kafka::cluster::free_port().expect("a free port")
}

/// Runs a binary that is meant to fail at once, the way a newcomer meets it (with
/// `RUST_BACKTRACE=1`, so a backtrace pushing the one-line error off the screen would
/// show); returns its exit status, stderr and how long it took. Stops it and fails
/// the test after `limit`.
pub fn run_to_failure(
    mut command: std::process::Command,
    limit: std::time::Duration,
) -> (std::process::ExitStatus, String, std::time::Duration) {
    use std::process::Stdio;
    let started = std::time::Instant::now();
    let mut child = command
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    while child.try_wait().expect("waiting for it").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{command:?} still runs after {limit:?}; it should have failed at once");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("its output");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}
