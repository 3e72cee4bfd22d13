//! SQL through `psql`, PostgreSQL's own client: checking a login, and the few
//! statements that set up and inspect a benchmark's databases.
//!
//! Why a command and not a driver: xtask must start the infrastructure on a fresh
//! clone without compiling sqlx first, and the benchmarks run pgbench (which comes
//! with psql) anyway. The services themselves talk to PostgreSQL with sqlx.

use crate::endpoints::redact;
use crate::process;
use anyhow::bail;
use std::process::Command;
use std::time::Duration;

/// Logs in at `url` and runs `select 1` (with `psql`; nothing is checked if it is missing,
/// and that is said on stderr).
pub fn check_url(url: &str) -> anyhow::Result<()> {
    let shown = redact(url);
    if !process::on_path("psql") {
        eprintln!("postgresql: psql is not installed, so the login at {shown} is not checked");
        return Ok(());
    }
    let out = process::output(
        Command::new("psql")
            .arg(url)
            .args(["-X", "-A", "-t", "-q", "-c", "select 1"])
            .env("PGCONNECT_TIMEOUT", "5"),
        Duration::from_secs(20),
    )?;
    if !out.status.success() {
        bail!(
            "cannot log in to PostgreSQL at {shown}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs one SQL statement on the server at `url`.
pub fn execute(url: &str, sql: &str) -> anyhow::Result<()> {
    psql(url, &[], sql).map(|_| ())
}

/// Runs one query on the server at `url` and returns its output, unaligned and
/// without headers (`psql -A -t`): `SELECT count(*) …` gives `42`.
pub fn query(url: &str, sql: &str) -> anyhow::Result<String> {
    psql(url, &["-A", "-t"], sql)
}

/// `psql URL -c SQL`, stopping at the first error; returns what it printed.
fn psql(url: &str, format: &[&str], sql: &str) -> anyhow::Result<String> {
    let out = process::output(
        Command::new("psql")
            .arg(url)
            .args(["-X", "-q"])
            .args(format)
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "5"),
        Duration::from_secs(60),
    )?;
    if !out.status.success() {
        bail!(
            "`{sql}` on {}: {}",
            redact(url),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
