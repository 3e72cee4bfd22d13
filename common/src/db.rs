//! One connection function for SQLite and PostgreSQL.
//!
//! Services hold an `AnyPool` and write portable SQL (`$1` placeholders, TEXT ids and
//! RFC 3339 timestamps, BIGINT money), so the *same* query text runs on an embedded
//! SQLite file — zero setup for a learner — and on PostgreSQL via `DATABASE_URL`.
//! The price is that column types stay simple; the gain is one code path to test.

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Connection, Executor};
use std::time::Duration;

/// A connection back in the pool for less than this is handed out again without a
/// liveness check. sqlx pings every connection it takes from the pool by default: one
/// more round trip for every acquire, three per phase-1 order (menu, insert, payment
/// result), which cost PostgreSQL a third more work per order than the order's own
/// SQL. A connection used half a second ago is alive; one idle for longer (perhaps
/// across a database restart) is still checked. HikariCP does the same
/// (`aliveBypassWindowMs`, also 500 ms).
const ALIVE_BYPASS: Duration = Duration::from_millis(500);

use common_local::endpoints::POSTGRES;
// Plain string work on URLs, shared with xtask (which has no sqlx).
pub use common_local::endpoints::{LOCAL_POSTGRES_URL, redact, with_database};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(url: &str) -> anyhow::Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            anyhow::bail!("unsupported DATABASE_URL {url:?}: use sqlite://FILE or postgres://…")
        }
    }
}

/// Opens a pool. SQLite files are created if missing and put in WAL mode (readers do
/// not block the writer); a busy timeout makes concurrent writers wait their turn
/// instead of failing with "database is locked".
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<AnyPool> {
    install_default_drivers();
    let backend = Backend::of(url)?;
    let mut options = AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= ALIVE_BYPASS {
                    conn.ping().await?;
                }
                Ok(true)
            })
        });
    let url = match backend {
        Backend::Sqlite => {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            });
            if url.contains('?') {
                url.to_owned()
            } else {
                format!("{url}?mode=rwc")
            }
        }
        Backend::Postgres => url.to_owned(),
    };
    if backend == Backend::Postgres {
        // Fails at once when nothing listens (sqlx would retry for `acquire_timeout`).
        crate::unreachable::check(&POSTGRES, &url).await?;
    }
    options.connect(&url).await.map_err(|err| match backend {
        Backend::Postgres => postgres_error(&url, err),
        Backend::Sqlite => {
            anyhow::Error::new(err).context(format!("cannot open SQLite database {url}"))
        }
    })
}

/// A connection that never reached PostgreSQL (no answer, TLS, a timeout) is
/// [`Unreachable`](crate::unreachable::Unreachable): the one line naming the server
/// and `cargo xtask up`. One that PostgreSQL turned away (a wrong password, a missing
/// database) says so in PostgreSQL's words: starting the server would not help.
fn postgres_error(url: &str, err: sqlx::Error) -> anyhow::Error {
    match err {
        sqlx::Error::Database(_) | sqlx::Error::Configuration(_) | sqlx::Error::Protocol(_) => {
            anyhow::Error::new(err).context(format!("connecting to {}", redact(url)))
        }
        other => POSTGRES
            .unreachable(POSTGRES.address(url))
            .because(other)
            .into(),
    }
}

/// Creates the PostgreSQL database named in `url` if it does not exist yet (connecting
/// to the server's `postgres` database to do so). Phase 2 gives every service its own
/// database; this lets `cargo run` start on an empty server.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let name = url
        .split('?')
        .next()
        .and_then(|base| base.rsplit_once('/'))
        .map(|(_, name)| name)
        .filter(|name| !name.is_empty())
        .with_context(|| format!("no database name in {}", redact(url)))?;
    anyhow::ensure!(
        name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "database name {name:?} must be letters, digits and underscores"
    );
    let admin = connect(&with_database(url, "postgres"), 1).await?;
    let exists = sqlx::query("SELECT 1 AS one FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&admin)
        .await?
        .is_some();
    if !exists {
        let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await;
        // Two services starting at once may both try. The loser sees "already exists"
        // (42P04) — or, when both got past the catalogue's check together, the
        // catalogue's own unique index refusing the second row (23505).
        let raced = |err: &sqlx::Error| {
            err.as_database_error()
                .and_then(|db| db.code())
                .is_some_and(|code| code == "42P04" || code == "23505")
        };
        if let Err(err) = created
            && !raced(&err)
        {
            return Err(err).with_context(|| format!("creating database {name}"));
        }
        tracing::info!(database = name, "created database");
    }
    admin.close().await;
    Ok(())
}

/// `($1, $2, $3), ($4, $5, $6), …`: `rows` rows of `columns` placeholders, numbered
/// from `first` — for a statement that takes a list whose length is known only at run
/// time (a multi-row `VALUES`, an `IN (…)`), built with `sqlx::AssertSqlSafe` from
/// this and nothing a user typed.
pub fn placeholders(rows: usize, columns: usize, first: usize) -> String {
    (0..rows)
        .map(|row| {
            let cells: Vec<String> = (0..columns)
                .map(|col| format!("${}", first + row * columns + col))
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The current time at the precision timestamps are stored with (microseconds), so
/// an order returned from memory equals the same order read back from the database.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// Timestamps are stored as fixed-width RFC 3339 text in UTC, which sorts correctly
/// as text in both databases.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn parse_timestamp(text: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("bad timestamp {text:?} in database"))?
        .with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_sort_as_text() {
        let early = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.000001Z")
            .unwrap()
            .with_timezone(&Utc);
        let late = DateTime::parse_from_rfc3339("2026-01-02T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(timestamp(early) < timestamp(late));
        assert_eq!(parse_timestamp(&timestamp(early)).unwrap(), early);
    }

    #[tokio::test]
    async fn an_unreachable_postgres_is_named_with_the_command_that_starts_it() {
        // A port nothing listens on: bound, then let go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = std::time::Instant::now();
        let err = connect(
            &format!("postgres://postgres:secret@127.0.0.1:{port}/none"),
            1,
        )
        .await
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "cannot reach PostgreSQL at 127.0.0.1:{port} (connection refused): \
                 start it with `cargo xtask up`"
            )
        );
        assert!(
            err.downcast_ref::<crate::unreachable::Unreachable>()
                .is_some(),
            "callers can add their own way out"
        );
        // At once, not after the pool's 10 s acquire timeout.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn backends_are_recognised_by_scheme() {
        assert_eq!(Backend::of("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::of("postgres://localhost/x").unwrap(),
            Backend::Postgres
        );
        assert!(Backend::of("mysql://x").is_err());
    }
}
