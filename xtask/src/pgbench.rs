//! pgbench running exactly the SQL that one `POST /orders` costs in phase 1.
//!
//! A benchmark figure alone says little: is 900 orders/s good? Running the same
//! statements straight from PostgreSQL's own benchmark client, at the same
//! concurrency on the same machine, gives the ceiling the database allows. The gap
//! between that row and the service's row is what the service itself costs
//! (HTTP, JSON, the payment call, the connection pool, the async runtime).
//!
//! Two pgbench details:
//! * `\gset` stores the columns of a one-row result in variables (`id` here), and
//!   `:id` uses one. pgbench has no `:'id'` (that is psql's quoting syntax).
//! * `-M prepared` sends `:id` as a bind parameter of a prepared statement — as
//!   sqlx does for the service — rather than pasting the text into the SQL.
//!
//! `-l` writes one line per transaction, `client tx_no latency_us script epoch_s
//! epoch_us`, one file per thread; we read them into the same kind of histogram as
//! the HTTP load generator, so the percentiles are computed the same way.

use crate::loadgen;
use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// The statements of one `POST /orders` in phase 1 (see `phase1-monolith/src/store.rs`):
/// read the menu, insert the order and its two lines in one transaction, then mark
/// it paid with an optimistic-concurrency update.
pub const PHASE1_ORDER: &str = r"SELECT sku, name, price_cents FROM menu_items;
BEGIN;
INSERT INTO orders (id, customer_id, status, cancellation_reason, total_cents, idempotency_key, payment_id, version, created_at, updated_at) VALUES (gen_random_uuid()::text, 'bench', 'placed', NULL, 1730, NULL, NULL, 1, now()::text, now()::text) RETURNING id \gset
INSERT INTO order_items (order_id, line_no, sku, name, qty, unit_price_cents) VALUES (:id, 0, 'pizza-margherita', 'Pizza Margherita', 1, 1150);
INSERT INTO order_items (order_id, line_no, sku, name, qty, unit_price_cents) VALUES (:id, 1, 'cola', 'Cola 0.33 l', 2, 290);
COMMIT;
UPDATE orders SET status = 'paid', cancellation_reason = NULL, payment_id = 'ch_bench', version = version + 1, updated_at = now()::text WHERE id = :id AND version = 1;
";

#[derive(Debug)]
pub struct Report {
    /// Transactions per second as pgbench reports it (without connection time).
    pub tps: f64,
    pub latency_us: Histogram<u64>,
    pub failed: u64,
}

/// Runs `script` against `url` with `clients` connections for `duration`; logs and
/// the script file go to `dir`.
pub async fn run(
    url: &str,
    script: &str,
    clients: usize,
    duration: Duration,
    dir: &Path,
) -> anyhow::Result<Report> {
    let script_path = dir.join("pgbench-script.sql");
    std::fs::write(&script_path, script)?;
    let log_prefix = dir.join("pgbench");
    let seconds = duration.as_secs_f64().ceil().max(1.0) as u64;
    let threads = clients.clamp(1, 2);
    let mut cmd = tokio::process::Command::new("pgbench");
    cmd.args(["-n", "-M", "prepared"])
        .args(["-c", &clients.to_string()])
        .args(["-j", &threads.to_string()])
        .args(["-T", &seconds.to_string()])
        .arg("-f")
        .arg(&script_path)
        .arg("-l")
        .arg("--log-prefix")
        .arg(&log_prefix)
        .arg(url)
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    println!(
        "$ pgbench -n -M prepared -c {clients} -j {threads} -T {seconds} -f {} -l --log-prefix {} {}",
        script_path.display(),
        log_prefix.display(),
        crate::services::redact(url)
    );
    let limit = duration + Duration::from_secs(60);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .with_context(|| format!("pgbench did not finish within {limit:?}"))?
        .context("could not start pgbench")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("pgbench failed ({}):\n{stdout}{stderr}", out.status);
    }
    let tps = stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no `tps = …` line in pgbench's output:\n{stdout}"))?;

    let mut latency_us = loadgen::histogram();
    let mut failed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with("pgbench.") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())?;
        for line in text.lines() {
            // The third column is the latency in µs, or "failed"/"skipped".
            match line.split_whitespace().nth(2).map(str::parse::<u64>) {
                Some(Ok(us)) => latency_us.saturating_record(us),
                Some(Err(_)) => failed += 1,
                None => {}
            }
        }
    }
    if latency_us.is_empty() {
        bail!("pgbench wrote no transaction log into {}", dir.display());
    }
    Ok(Report {
        tps,
        latency_us,
        failed,
    })
}
