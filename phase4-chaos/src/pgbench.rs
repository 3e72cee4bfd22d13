//! pgbench running exactly the SQL that one order costs: one `POST /orders` in phase
//! 1 ([`PHASE1_ORDER`]), orders' whole journey through the services in phase 2
//! ([`phase2_orders`]).
//!
//! A benchmark figure alone says little: is 900 orders/s good? Running the same
//! statements straight from PostgreSQL's own benchmark client, at the same
//! concurrency on the same machine, gives the ceiling the database allows. The gap
//! between that row and the service's row is what the service itself costs
//! (HTTP, JSON, the payment call, the connection pool, the async runtime — and in
//! phase 2 the broker and the consumers in between).
//!
//! Two pgbench details:
//! * `\gset` stores the columns of a one-row result in variables (`id` here), and
//!   `:id` uses one. pgbench has no `:'id'` (that is psql's quoting syntax).
//! * `-M prepared` sends `:id` as a bind parameter of a prepared statement — as
//!   sqlx does for the service — rather than pasting the text into the SQL. It also
//!   means that *any* `:word` or `:123` in the script is taken for a variable, even
//!   inside a string literal: no timestamps or compact JSON numbers in literals.
//!
//! `-l` writes one line per transaction, `client tx_no latency_us script epoch_s
//! epoch_us`, one file per thread; we read them into the same kind of histogram as
//! the HTTP load generator, so the percentiles are computed the same way.

use crate::load;
use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use phase2_events::flow::Service;
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

/// The schemas of the scratch database that stand in for the four phase-2 service
/// databases, in the order `order`, `payment`, `inventory`, `delivery`.
///
/// pgbench connects to one database, while each phase-2 service has its own. The
/// real migrations are applied to one schema per service instead (see
/// [`crate::bench::phase2`]), so one pgbench transaction can run what all four services run
/// for an order. The cost is the same: every database of a server shares its WAL,
/// and each commit below is a commit there too.
pub const PHASE2_SCHEMAS: [&str; 4] = ["order_db", "payment_db", "inventory_db", "delivery_db"];

/// The SQL of `batch` orders' whole journey in phase 2, `placed` → `delivered`,
/// across every service (see `phase2-events/src/services/`), as one pgbench script:
/// **one pgbench transaction = `batch` orders**, so pgbench's tps × `batch` reads as
/// orders/s worth of SQL. Each order is placed in a transaction of its own (the API
/// commits per request); everything after that — the relays, the consumers, the
/// payment worker, the delivery ticker — commits the `batch` orders together, as the
/// services do when `batch` events are waiting for them. `batch = 1` is the
/// one-event-per-commit floor; the benchmark also runs it at the batch size its
/// saturation run saw. `envelope_bytes` is the size of a real event envelope (the
/// relay reads it back, and it is most of an outbox row).
///
/// Faithful to the services, statement by statement, with three simplifications:
/// * the delivery ticker's and the payment worker's `… FOR UPDATE SKIP LOCKED` are
///   limited to this script's orders, so parallel pgbench clients do not claim each
///   other's rows;
/// * the saga sees the payment before the stock reservation (either order costs the
///   same statements, bar one);
/// * events a consumer ignores cost nothing here, as in the services
///   (`Handler::wants`).
///
/// Not here: the provider's HTTP call, Redis (the notification service), the
/// delivery ticker's empty ticks (read-only), and everything Kafka does.
pub fn phase2_orders(envelope_bytes: usize, batch: usize) -> Phase2Script {
    let [order, payment, inventory, delivery] = PHASE2_SCHEMAS;
    let batch = batch.max(1);
    let mut s = Phase2Script {
        sql: String::new(),
        batch,
        transactions: 0,
        statements: 0,
        envelope_bytes,
    };
    s.comment("POST /orders (order service), once per order: the menu, then order, lines and OrderPlaced in one transaction");
    for i in 1..=batch {
        s.statement(&format!(
            "SELECT sku, name, price_cents FROM {order}.menu_items;"
        ));
        s.statement("BEGIN;");
        s.statement(&format!(
            "INSERT INTO {order}.orders (id, customer_id, status, cancellation_reason, total_cents, \
             idempotency_key, payment_id, version, created_at, updated_at) VALUES (gen_random_uuid()::text, \
             'bench', 'placed', NULL, 1730, NULL, NULL, 1, now()::text, now()::text) RETURNING id AS oid{i} \\gset"
        ));
        for (line_no, sku, name, qty, price) in [
            (0, "pizza-margherita", "Pizza Margherita", 1, 1150),
            (1, "cola", "Cola 0.33 l", 2, 290),
        ] {
            s.statement(&format!(
                "INSERT INTO {order}.order_items (order_id, line_no, sku, name, qty, unit_price_cents) \
                 VALUES (:oid{i}, {line_no}, '{sku}', '{name}', {qty}, {price});"
            ));
        }
        s.outbox(order, i, "orders", "OrderPlaced");
        s.commit();
    }
    s.relay(order);

    s.comment("payment service, OrderPlaced: a pending row per order (the worker charges)");
    s.consume(payment, Service::Payment, |s, i| {
        s.statement(&format!(
            "INSERT INTO {payment}.payments (order_id, status, amount_cents, updated_at, request, due_at) \
             VALUES (:oid{i}, 'pending', 1730, now()::text, repeat('x', {}), now()::text) \
             ON CONFLICT (order_id) DO NOTHING;",
            s.envelope_bytes
        ));
    });
    s.comment("payment worker: lease the due rows, (call the provider), write the answers");
    s.statement(&format!(
        "UPDATE {payment}.payments SET leased_until = now()::text, attempts = attempts + 1 \
         WHERE order_id IN (SELECT order_id FROM {payment}.payments WHERE due_at <= now()::text \
         AND order_id IN ({}) ORDER BY due_at LIMIT {batch} FOR UPDATE SKIP LOCKED) \
         RETURNING order_id, status, amount_cents, request, cancel, attempts;",
        s.orders()
    ));
    s.transactions += 1;
    s.statement("BEGIN;");
    for i in 1..=batch {
        s.statement(&format!(
            "UPDATE {payment}.payments SET status = 'captured', charge_id = COALESCE('ch_bench', charge_id), \
             updated_at = now()::text, leased_until = NULL, due_at = NULL \
             WHERE order_id = :oid{i} AND (status = 'pending' OR status = 'pending');"
        ));
        s.outbox(payment, i, "payments", "PaymentCompleted");
    }
    s.commit();
    s.relay(payment);

    s.comment(
        "inventory service, OrderPlaced: lock the stock rows in sku order, check, subtract, record",
    );
    s.consume(inventory, Service::Inventory, |s, i| {
        s.statement(&format!(
            "SELECT status, lines FROM {inventory}.reservations WHERE order_id = :oid{i} FOR UPDATE;"
        ));
        for sku in ["cola", "pizza-margherita"] {
            s.statement(&format!(
                "SELECT available FROM {inventory}.stock WHERE sku = '{sku}' FOR UPDATE;"
            ));
        }
        for (sku, qty) in [("cola", 2), ("pizza-margherita", 1)] {
            s.statement(&format!(
                "UPDATE {inventory}.stock SET available = available - {qty} WHERE sku = '{sku}';"
            ));
        }
        // `": 2"`, not `":2"`: pgbench would read `:2` as a variable.
        s.statement(&format!(
            "INSERT INTO {inventory}.reservations (order_id, status, lines, updated_at) VALUES (:oid{i}, \
             'reserved', '[{{\"sku\": \"cola\", \"qty\": 2}}, {{\"sku\": \"pizza-margherita\", \"qty\": 1}}]', now()::text);"
        ));
        s.outbox(inventory, i, "inventory", "StockReserved");
    });
    s.relay(inventory);

    s.comment("saga (order service), PaymentCompleted: placed -> paid");
    s.saga_step(1, "paid", "OrderPaid");
    s.comment("saga, StockReserved: paid -> confirmed");
    s.saga_step(2, "confirmed", "OrderConfirmed");
    s.comment("delivery service, OrderConfirmed: schedule the delivery");
    s.consume(delivery, Service::Delivery, |s, i| {
        s.statement(&format!(
            "INSERT INTO {delivery}.deliveries (order_id, stage, due_at, correlation_id, last_event_id) \
             VALUES (:oid{i}, 'confirmed', now()::text, 'bench', gen_random_uuid()::text) \
             ON CONFLICT (order_id) DO NOTHING;"
        ));
    });

    for (version, stage, delivery_event, order_event) in [
        (3, "preparing", "DeliveryPreparing", "OrderPreparing"),
        (
            4,
            "out_for_delivery",
            "DeliveryDispatched",
            "OrderOutForDelivery",
        ),
        (5, "delivered", "DeliveryCompleted", "OrderDelivered"),
    ] {
        s.comment(&format!("delivery ticker: -> {stage}"));
        s.statement("BEGIN;");
        s.statement(&format!(
            "SELECT order_id, stage, correlation_id, last_event_id, traceparent FROM {delivery}.deliveries \
             WHERE stage <> 'delivered' AND due_at <= now()::text AND order_id IN ({}) \
             ORDER BY due_at LIMIT 200 FOR UPDATE SKIP LOCKED;",
            s.orders()
        ));
        for i in 1..=batch {
            s.outbox(delivery, i, "delivery", delivery_event);
            s.statement(&format!(
                "UPDATE {delivery}.deliveries SET stage = '{stage}', due_at = now()::text, \
                 last_event_id = gen_random_uuid()::text WHERE order_id = :oid{i};"
            ));
        }
        s.commit();
        s.relay(delivery);
        s.comment(&format!("saga, {delivery_event}: -> {stage}"));
        s.saga_step(version, stage, order_event);
    }
    s
}

/// [`phase2_orders`]'s script and what it contains.
#[derive(Debug)]
pub struct Phase2Script {
    pub sql: String,
    /// Orders per pgbench transaction (per run of the script).
    pub batch: usize,
    /// Committed database transactions per run of the script (autocommit writes
    /// included, read-only statements not).
    pub transactions: usize,
    /// SQL statements per run of the script, `BEGIN` and `COMMIT` included.
    pub statements: usize,
    envelope_bytes: usize,
}

impl Phase2Script {
    /// Committed transactions per order.
    pub fn transactions_per_order(&self) -> f64 {
        self.transactions as f64 / self.batch as f64
    }

    /// Statements per order.
    pub fn statements_per_order(&self) -> f64 {
        self.statements as f64 / self.batch as f64
    }

    fn comment(&mut self, text: &str) {
        self.sql.push_str(&format!("-- {text}\n"));
    }

    fn statement(&mut self, sql: &str) {
        self.sql.push_str(sql);
        self.sql.push('\n');
        self.statements += 1;
    }

    fn commit(&mut self) {
        self.statement("COMMIT;");
        self.transactions += 1;
    }

    /// `:oid1, :oid2, …`: the script's orders.
    fn orders(&self) -> String {
        (1..=self.batch)
            .map(|i| format!(":oid{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `outbox::enqueue`: order `i`'s event row, in the caller's transaction.
    fn outbox(&mut self, schema: &str, i: usize, topic: &str, event_type: &str) {
        // A filler of the envelope's size: a real envelope has `:` before numbers and
        // inside timestamps, which pgbench would take for variables.
        self.statement(&format!(
            "INSERT INTO {schema}.outbox (topic, message_key, event_id, event_type, envelope, created_at, starts_flow) \
             VALUES ('bench.{topic}', :oid{i}, gen_random_uuid()::text, '{event_type}', repeat('x', {}), \
             now()::text, {}) RETURNING id AS outbox{i} \\gset",
            self.envelope_bytes,
            event_type == "OrderPlaced"
        ));
    }

    /// The relay publishes the rows just committed (one per order): read the
    /// unpublished rows, send (Kafka, not here), mark exactly the ids sent in one
    /// statement.
    fn relay(&mut self, schema: &str) {
        self.statement(&format!(
            "SELECT id, topic, message_key, envelope FROM {schema}.outbox \
             WHERE published_at IS NULL ORDER BY starts_flow, id LIMIT 200;"
        ));
        let ids: Vec<String> = (1..=self.batch).map(|i| format!("(:outbox{i})")).collect();
        self.statement(&format!(
            "UPDATE {schema}.outbox SET published_at = now()::text WHERE id IN ({});",
            ids.join(", ")
        ));
        self.transactions += 1;
    }

    /// `consumer::Transactional::apply_batch`: the orders' locks in one statement,
    /// the processed_events claims in one statement, then each order's effect, in one
    /// transaction.
    fn consume(&mut self, schema: &str, consumer: Service, effect: impl Fn(&mut Self, usize)) {
        let consumer = consumer.group();
        self.statement("BEGIN;");
        let locks: Vec<String> = (1..=self.batch)
            .map(|i| format!("('bench.{consumer}/' || :oid{i}::text)"))
            .collect();
        self.statement(&format!(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM (VALUES {}) AS v(k);",
            locks.join(", ")
        ));
        let claims: Vec<String> = (1..=self.batch)
            .map(|_| format!("('bench.{consumer}', gen_random_uuid()::text, now()::text)"))
            .collect();
        self.statement(&format!(
            "INSERT INTO {schema}.processed_events (consumer, event_id, processed_at) VALUES {} \
             ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id;",
            claims.join(", ")
        ));
        for i in 1..=self.batch {
            effect(self, i);
        }
        self.commit();
    }

    /// The saga moves each order (`Saga::handle` + `OrderStore::apply_in`) and
    /// announces it, in one batch; the relay publishes the announcements.
    fn saga_step(&mut self, version: u32, status: &str, announce: &str) {
        let order = PHASE2_SCHEMAS[0];
        self.consume(order, Service::Order, |s, i| {
            s.statement(&format!(
                "SELECT stock_reserved_at FROM {order}.orders WHERE id = :oid{i} FOR UPDATE;"
            ));
            s.statement(&format!(
                "SELECT id, customer_id, status, cancellation_reason, total_cents, idempotency_key, \
                 payment_id, version, created_at, updated_at FROM {order}.orders WHERE id = :oid{i};"
            ));
            s.statement(&format!(
                "SELECT sku, name, qty, unit_price_cents FROM {order}.order_items \
                 WHERE order_id = :oid{i} ORDER BY line_no;"
            ));
            s.statement(&format!(
                "UPDATE {order}.orders SET status = '{status}', cancellation_reason = NULL, \
                 payment_id = 'ch_bench', version = version + 1, updated_at = now()::text \
                 WHERE id = :oid{i} AND version = {version};"
            ));
            s.outbox(order, i, "orders", announce);
        });
        self.relay(order);
    }
}

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
        common_local::endpoints::redact(url)
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

    let mut latency_us = load::histogram();
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
