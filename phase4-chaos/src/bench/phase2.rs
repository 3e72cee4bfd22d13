//! `cargo xtask bench phase2`: the event-driven system end to end, beside the two
//! limits it is built on — the broker and the database.
//!
//! In phase 2, `202 Accepted` only means "placed, and `OrderPlaced` is in the
//! outbox". The order is done when the saga has driven it to `delivered` (or
//! `cancelled`) through five services, four databases, eleven events and a broker.
//! So this benchmark measures two latencies per order — the API's and the whole
//! journey's — and asks which part of the machinery limits the throughput.
//!
//! 1. Builds the release binary and gives this run fresh databases
//!    (`ferriseats_bench_orders`, …) and its own topic namespace (`bench-<ms>`) on the
//!    broker `cargo xtask up` runs; the namespace's topics are deleted at the end.
//! 2. Starts `phase2-events all` as a child process on free ports, with a provider
//!    that never fails, declines or waits, and delivery delays of 0; stocks up. An
//!    observer consumes `<namespace>.orders` like any downstream service and notes
//!    when each order's final event (`OrderDelivered`/`OrderCancelled`) arrives. A
//!    few orders first prime every consumer group; then the idle memory is noted.
//! 3. **Saturation run**: a fixed number of orders in the system, each finished
//!    order replaced at once by a new one (closed loop). The system always has work
//!    and the backlog stays bounded: the completion rate is its sustained throughput.
//!    Meanwhile the queues (outboxes, consumer lag) and the CPU and memory of each
//!    program are sampled: they say where the bottleneck is. Then the batch size the
//!    consumers reached (`batch_sizes`: `processed_events` rows over the
//!    transaction ids that wrote them).
//! 4. **Latency run**, once those orders are done: orders arrive at a fixed rate
//!    ([`open`]; no coordinated omission) below capacity — by default half the
//!    sustained rate: API and end-to-end percentiles.
//! 5. **Overload run**: twice the sustained rate arrives (open model). A pipeline
//!    that degrades gracefully still finishes at about its sustained rate; one whose
//!    new orders crowd the queues of the orders in flight finishes fewer and fewer.
//!    Reported as measured, with the completions of each second, and how long the
//!    backlog then takes to drain.
//! 6. **The learner's case**: a second system with the provider at phase 2's
//!    defaults (2–5 s, 30 % failures) and a saturation run with many more orders in
//!    it.
//! 7. **Database limit**, the systems stopped: pgbench runs the services' SQL
//!    ([`pgbench::phase2_orders`]) against the real migrations, one schema per
//!    service database — one event per commit, and at the batch size step 3 saw.
//! 8. **Broker limit**: the services' own producer settings (idempotent,
//!    `acks=all`, linger 5 ms) send N messages of a real envelope's size to a fresh
//!    topic — all at once, then one at a time.
//! 9. Databases dropped — on error too — then a markdown table, the headline
//!    figures (`Summary`, also to `--json PATH`) and `target/bench/phase2.json`.

use crate::bench::{BenchArgs, Server, free_local_addr, order_body};
use crate::load::{
    self,
    open::{self, OpenLoad, Outcome},
};
use crate::pgbench;
use anyhow::{Context, bail};
use clap::Args;
use common::domain::{OrderId, OrderStatus};
use common::shutdown::CancellationToken;
use common_local::{endpoints, local_kafka, process, psql};
use hdrhistogram::Histogram;
use phase2_events::events::Envelope;
use phase2_events::flow::{Line, OrderPlaced, Service, Topics, event};
use phase2_events::kafka::LagProbe;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, Args)]
#[command(next_help_heading = "Phase 2")]
pub struct Phase2Args {
    /// Latency run: orders arriving per second (open model). Default: half the
    /// sustained rate the saturation run (which goes first) measured. Phase 3: the
    /// rate of every latency run (default: half the first run's sustained rate).
    #[arg(long, value_parser = parse_rate)]
    pub(crate) latency_rate: Option<f64>,
    /// Latency run: how long orders arrive (the first --warmup is not measured).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    latency_duration: Duration,
    /// Saturation run: orders in the system at any time (closed loop: each finished
    /// order is replaced by a new one). Phase 3 too. Enough to keep every stage busy:
    /// by Little's law the run finishes at most this many per end-to-end latency, so
    /// too few measure the loop, not the system (32 measured 118–133 orders/s where
    /// 128 measured 200).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) saturation_in_flight: u16,
    /// Saturation run: how long (the first --warmup is not measured).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    saturation_duration: Duration,
    /// Overload run: orders arriving per second — more than the system can finish.
    /// Default: twice the sustained rate the saturation run measured.
    #[arg(long, value_parser = parse_rate)]
    overload_rate: Option<f64>,
    /// Overload run: how long orders arrive (the first --warmup is not measured).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    overload_duration: Duration,
    /// Broker limit: messages produced (to a topic of the run's own, deleted after).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(100..=1_000_000))]
    produce_messages: u32,
    /// Database limit: pgbench clients, each running one order's SQL after another
    /// (for --duration).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pgbench_clients: u16,
    /// The learner's case: a second saturation run with the payment provider at phase
    /// 2's defaults (2–5 s, 30 % failures, 5 % declines), with this many orders in the
    /// system (each takes seconds, so it takes many to fill the pipeline); 0 skips it.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u16).range(0..=1024))]
    learner_in_flight: u16,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate <= 100_000.0 => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a rate between 0 and 100000 per second"
        )),
    }
}

/// Events one delivered order puts on the broker: six on `orders` (placed, paid,
/// confirmed, preparing, out for delivery, delivered), one each on `payments` and
/// `inventory`, three on `delivery`.
const EVENTS_PER_ORDER: u32 = 11;
/// Partitions of every topic (the services' default, passed explicitly).
const PARTITIONS: i32 = 3;
/// Requests the load generator leaves unanswered at most.
const MAX_IN_FLIGHT: usize = 512;
/// Orders sent (and finished) before measuring, so every consumer group has its
/// partitions: a new group can take seconds before its first fetch.
const PRIMING_ORDERS: u64 = 6;
/// How long the latency run's orders may still take to finish after the last one
/// arrived.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// The databases of the system under test, by service (dropped before and after).
const DATABASES: [(&str, &str); 4] = [
    ("order", "ferriseats_bench_orders"),
    ("payment", "ferriseats_bench_payments"),
    ("inventory", "ferriseats_bench_inventory"),
    ("delivery", "ferriseats_bench_delivery"),
];
/// pgbench's database: one schema per service (see [`pgbench::PHASE2_SCHEMAS`]).
const SQL_DATABASE: &str = "ferriseats_bench_sql";

/// Where the benchmarks find PostgreSQL, the shared broker and Redis.
pub(crate) struct Infrastructure {
    pub admin_url: String,
    pub brokers: String,
    pub redis_url: String,
}

impl Infrastructure {
    /// Checks that each answers, before the long builds.
    pub(crate) fn check() -> anyhow::Result<Infrastructure> {
        let admin_url = endpoints::POSTGRES.url();
        psql::check_url(&admin_url).context(
            "PostgreSQL is needed for this benchmark: start it with `cargo xtask up` \
             (or point TEST_DATABASE_URL at a server)",
        )?;
        let brokers = endpoints::KAFKA.url();
        local_kafka::check_brokers(&brokers).context("Apache Kafka is needed: `cargo xtask up`")?;
        let redis_url = endpoints::REDIS.url();
        ping_redis(&redis_url).context("Redis is needed (notifications): `cargo xtask up`")?;
        Ok(Infrastructure {
            admin_url,
            brokers,
            redis_url,
        })
    }
}

/// Connects to Redis at `url` and sends `PING`, within two seconds.
fn ping_redis(url: &str) -> anyhow::Result<()> {
    let shown = endpoints::redact(url);
    let client = redis::Client::open(url).with_context(|| format!("Redis URL {shown}"))?;
    let mut connection = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .with_context(|| format!("cannot connect to Redis at {shown}"))?;
    let _: String = redis::cmd("PING")
        .query(&mut connection)
        .with_context(|| format!("Redis at {shown} does not answer PING"))?;
    Ok(())
}

pub fn run(args: &BenchArgs) -> anyhow::Result<serde_json::Value> {
    let began = std::time::Instant::now();
    // Fail before the long build if something is missing.
    let Infrastructure {
        admin_url,
        brokers,
        redis_url,
    } = Infrastructure::check()?;
    let have_pgbench = process::on_path("pgbench");

    let bin = crate::bench::build_release("phase2-events")?;
    let built = std::time::Instant::now();

    let dir = process::target_dir().join("bench/phase2");
    match std::fs::remove_dir_all(&dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(err).context(format!("clearing {}", dir.display()));
        }
        _ => {}
    }
    std::fs::create_dir_all(dir.join("pgbench"))?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let setup = Setup {
        admin_url: admin_url.clone(),
        brokers,
        redis_url,
        namespace: format!("bench-{millis}"),
        subject: Subject::Phase2,
        bin,
        dir: dir.clone(),
        have_pgbench,
        ops_addr: None,
        otlp_endpoint: None,
        extra_args: Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    drop_databases(&admin_url);
    let outcome = runtime.block_on(measure(args, &setup));
    // Whatever happened: no databases and no topics left behind.
    drop_databases(&admin_url);
    runtime.block_on(delete_topics(&setup));
    let mut results = outcome?;
    results.seconds = began.elapsed().as_secs_f64();
    results.build_seconds = (built - began).as_secs_f64();

    print_table(&results);
    let summary = serde_json::to_value(results.summary())?;
    println!("\nThe figures: {}", serde_json::to_string_pretty(&summary)?);
    let json = process::target_dir().join("bench/phase2.json");
    let mut all = serde_json::to_value(&results)?;
    all["summary"] = summary.clone();
    std::fs::write(&json, serde_json::to_string_pretty(&all)? + "\n")?;
    println!(
        "\nwritten to {} (logs and the pgbench script in {}); {:.0} s in all, {:.0} s of it building",
        json.display(),
        dir.display(),
        results.seconds,
        results.build_seconds
    );
    Ok(summary)
}

/// What every step needs to know.
#[derive(Debug)]
pub(crate) struct Setup {
    pub(crate) admin_url: String,
    pub(crate) brokers: String,
    pub(crate) redis_url: String,
    pub(crate) namespace: String,
    /// Which system `bin` is.
    pub(crate) subject: Subject,
    pub(crate) bin: std::path::PathBuf,
    /// Logs go here.
    pub(crate) dir: std::path::PathBuf,
    pub(crate) have_pgbench: bool,
    /// Phase 3: where its ops server (/metrics) listens.
    pub(crate) ops_addr: Option<std::net::SocketAddr>,
    /// Phase 3: the OTLP/HTTP receiver its traces are exported to; none: no export.
    pub(crate) otlp_endpoint: Option<String>,
    /// More flags for the system.
    pub(crate) extra_args: Vec<String>,
}

impl Setup {
    fn database_url(&self, name: &str) -> String {
        common::db::with_database(&self.admin_url, name)
    }
}

/// Deletes every topic of the run's namespace (the system's and the broker limit's).
pub(crate) async fn delete_topics(setup: &Setup) {
    if let Err(err) = phase2_events::kafka::delete_namespace(&setup.brokers, &setup.namespace).await
    {
        eprintln!(
            "warning: deleting the topics of {}: {err:#}",
            setup.namespace
        );
    }
}

/// Drops the system's databases (and pgbench's) if they exist; the services create
/// theirs when missing, so the next system starts on empty ones.
pub(crate) fn drop_databases(admin_url: &str) {
    let names: Vec<&str> = DATABASES
        .iter()
        .map(|(_, name)| *name)
        .chain([SQL_DATABASE])
        .collect();
    drop_databases_named(admin_url, &names);
}

/// Drops each of `names` if it exists (warning when it cannot).
pub(crate) fn drop_databases_named(admin_url: &str, names: &[&str]) {
    for name in names {
        if let Err(err) = psql::execute(
            admin_url,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        ) {
            eprintln!("warning: {err:#}");
        }
    }
}

async fn measure(args: &BenchArgs, setup: &Setup) -> anyhow::Result<Results> {
    let p2 = &args.phase2;
    let sample = sample_envelope()?;

    let mut server = start_system(setup).await?;
    let runs = drive(args, setup, &mut server).await;
    server.terminate(Duration::from_secs(20)).await;
    let Runs {
        latency,
        saturation,
        overload,
        batch,
        idle_rss_mib,
    } = runs?;

    let learner = if p2.learner_in_flight > 0 {
        // A fresh system: new databases, the same topics (every group has committed
        // everything of the first system).
        drop_databases(&setup.admin_url);
        println!(
            "
the learner's case: the provider at phase 2's defaults (2–5 s, 30 % failures,              5 % declines)"
        );
        let mut server = start_system_with(setup, Provider::Defaults).await?;
        let run = learner_run(args, setup, &mut server).await;
        server.terminate(Duration::from_secs(20)).await;
        Some(run?)
    } else {
        None
    };

    // Once the systems are stopped, the limits: they have the machine to themselves.
    let mut sql = Vec::new();
    if setup.have_pgbench {
        // One event per commit, and the batches the saturation run saw.
        let seen = batch.events_per_transaction.round().max(1.0) as usize;
        for size in if seen > 1 { vec![1, seen] } else { vec![1] } {
            sql.push(pgbench_limit(args, setup, sample.len(), size).await?);
        }
    } else {
        println!("(pgbench is not installed, so there is no database limit row)");
    }
    println!(
        "\nbroker limit: {} messages of {} bytes (an OrderPlaced envelope)…",
        p2.produce_messages,
        sample.len()
    );
    let broker = produce_limit(setup, p2.produce_messages, &sample).await?;
    Ok(Results {
        benchmark: "phase2: POST /orders → delivered",
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        namespace: setup.namespace.clone(),
        warmup_s: args.warmup.as_secs_f64(),
        latency,
        saturation,
        overload,
        learner,
        batch,
        idle_rss_mib,
        broker,
        sql,
        seconds: 0.0,
        build_seconds: 0.0,
    })
}

/// How many events the consumers applied per database transaction during the
/// saturation run: rows of `processed_events` written since `since`, over the
/// distinct transaction ids (`xmin`) that wrote them, all four service databases
/// together.
#[derive(Debug, Clone, Copy, Serialize)]
struct BatchSizes {
    events: u64,
    transactions: u64,
    events_per_transaction: f64,
}

fn batch_sizes(setup: &Setup, since: &str) -> anyhow::Result<BatchSizes> {
    let (mut events, mut transactions) = (0u64, 0u64);
    for (_, name) in DATABASES {
        let row = psql::query(
            &setup.database_url(name),
            &format!(
                "SELECT count(*) || ' ' || count(DISTINCT xmin::text) FROM processed_events \
                 WHERE processed_at >= '{since}'"
            ),
        )?;
        let mut numbers = row.split_whitespace().map(str::parse::<u64>);
        if let (Some(Ok(e)), Some(Ok(t))) = (numbers.next(), numbers.next()) {
            events += e;
            transactions += t;
        }
    }
    Ok(BatchSizes {
        events,
        transactions,
        events_per_transaction: events as f64 / transactions.max(1) as f64,
    })
}

/// A real `OrderPlaced` envelope, as the relay sends it.
fn sample_envelope() -> anyhow::Result<String> {
    let placed = OrderPlaced {
        status: OrderStatus::Placed,
        customer_id: "bench-12345".to_owned(),
        total_cents: 1730,
        items: vec![
            Line {
                sku: "pizza-margherita".to_owned(),
                qty: 1,
            },
            Line {
                sku: "cola".to_owned(),
                qty: 2,
            },
        ],
    };
    let envelope = Envelope::new(
        event::ORDER_PLACED,
        OrderId::new(),
        &OrderId::new().to_string(),
        serde_json::to_value(placed)?,
    );
    Ok(serde_json::to_string(&envelope)?)
}

// ---------------------------------------------------------------------------------
// The two limits.

#[derive(Debug, Serialize)]
struct BrokerLimit {
    messages: u32,
    message_bytes: usize,
    failed: usize,
    seconds: f64,
    messages_per_second: f64,
    /// `messages_per_second` / [`EVENTS_PER_ORDER`].
    orders_per_second: f64,
    /// The same producer sending one message at a time, each acknowledged before
    /// the next is sent: what a relay that does not pipeline its sends gets.
    one_at_a_time_per_second: f64,
}

async fn produce_limit(
    setup: &Setup,
    messages: u32,
    envelope: &str,
) -> anyhow::Result<BrokerLimit> {
    let topic = format!("{}.bench-produce", setup.namespace);
    phase2_events::kafka::ensure_topics(&setup.brokers, &[&topic], 3).await?;
    let producer = phase2_events::kafka::producer(&setup.brokers)?;
    // The same headers as the relay's, from a parsed copy of the envelope.
    let parsed: Envelope = serde_json::from_str(envelope)?;
    let mut headers = OwnedHeaders::new();
    for (name, value) in parsed.headers() {
        headers = headers.insert(Header {
            key: name,
            value: Some(&value),
        });
    }
    // One message first: metadata, producer id and connections are not measured.
    producer
        .send(
            FutureRecord::to(&topic).key("warm-up").payload(envelope),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(err, _)| anyhow::anyhow!("producing to {topic}: {err}"))?;

    let keys: Vec<String> = (0..messages).map(|_| OrderId::new().to_string()).collect();
    let start = Instant::now();
    // Everything queued at once; librdkafka batches per partition (linger 5 ms).
    let sends = keys.iter().map(|key| {
        producer.send(
            FutureRecord::to(&topic)
                .key(key)
                .payload(envelope)
                .headers(headers.clone()),
            Duration::from_secs(60),
        )
    });
    let results = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(sends))
        .await
        .context("the broker did not acknowledge the messages within 120 s")?;
    let seconds = start.elapsed().as_secs_f64();
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err((err, _))) = results.iter().find(|r| r.is_err()) {
        eprintln!("broker limit: {failed} messages failed; the first: {err}");
    }
    let per_second = (messages as usize - failed) as f64 / seconds;

    // One at a time, for up to 200 messages or 5 s.
    let start = Instant::now();
    let mut sent = 0u32;
    for key in keys.iter().take(200) {
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(key)
                    .payload(envelope)
                    .headers(headers.clone()),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(err, _)| anyhow::anyhow!("producing to {topic}: {err}"))?;
        sent += 1;
        if start.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let one_at_a_time_per_second = f64::from(sent) / start.elapsed().as_secs_f64();
    Ok(BrokerLimit {
        messages,
        message_bytes: envelope.len(),
        failed,
        seconds,
        messages_per_second: per_second,
        orders_per_second: per_second / f64::from(EVENTS_PER_ORDER),
        one_at_a_time_per_second,
    })
}

#[derive(Debug, Serialize)]
struct SqlLimit {
    clients: u16,
    seconds: f64,
    /// Orders per run of the script: what the consumers commit together.
    batch: usize,
    /// pgbench's tps × `batch`.
    orders_per_second: f64,
    /// Of one run of the script (`batch` orders).
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    failed: u64,
    transactions_per_order: f64,
    statements_per_order: f64,
}

async fn pgbench_limit(
    args: &BenchArgs,
    setup: &Setup,
    envelope_bytes: usize,
    batch: usize,
) -> anyhow::Result<SqlLimit> {
    use phase2_events::services::{delivery, inventory, open_database, order, payment};
    let url = setup.database_url(SQL_DATABASE);
    psql::execute(
        &setup.admin_url,
        &format!("DROP DATABASE IF EXISTS {SQL_DATABASE} WITH (FORCE)"),
    )?;
    psql::execute(&setup.admin_url, &format!("CREATE DATABASE {SQL_DATABASE}"))?;
    let [order_db, payment_db, inventory_db, delivery_db] = pgbench::PHASE2_SCHEMAS;
    for (schema, migrators) in [
        (order_db, order::migrators()),
        (payment_db, payment::migrators()),
        (inventory_db, inventory::migrators()),
        (delivery_db, delivery::migrators()),
    ] {
        psql::execute(&url, &format!("CREATE SCHEMA {schema}"))?;
        // The service's real migrations, in its schema instead of its database.
        let scoped = with_search_path(&url, schema);
        open_database(&scoped, 1, migrators)
            .await
            .with_context(|| format!("migrating schema {schema} of {SQL_DATABASE}"))?
            .close()
            .await;
    }
    // Every order takes stock; the migration seeds 1,000 of each item.
    psql::execute(
        &url,
        &format!("UPDATE {inventory_db}.stock SET available = 1000000000"),
    )?;
    let script = pgbench::phase2_orders(envelope_bytes, batch);
    let clients = args.phase2.pgbench_clients;
    println!(
        "\ndatabase limit: pgbench, {clients} clients, {:?}; one transaction = {batch} orders = \
         {} database transactions, {} statements (script: {}/pgbench/pgbench-script.sql)…",
        args.duration,
        script.transactions,
        script.statements,
        setup.dir.display()
    );
    let report = pgbench::run(
        &url,
        &script.sql,
        usize::from(clients),
        args.duration,
        &setup.dir.join("pgbench"),
    )
    .await?;
    // The script must have taken every order all the way, or it measured less.
    let check = psql::query(
        &url,
        &format!("SELECT count(*) FILTER (WHERE status <> 'delivered') FROM {order_db}.orders"),
    )?;
    if check.trim() != "0" {
        bail!(
            "pgbench left {} orders short of `delivered`: the script in {} does not do \
             what the services do",
            check.trim(),
            setup.dir.join("pgbench").display()
        );
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(SqlLimit {
        clients,
        seconds: args.duration.as_secs_f64(),
        batch,
        orders_per_second: report.tps * batch as f64,
        p50_ms: ms(report.latency_us.value_at_quantile(0.50)),
        p99_ms: ms(report.latency_us.value_at_quantile(0.99)),
        max_ms: ms(report.latency_us.max()),
        failed: report.failed,
        transactions_per_order: script.transactions_per_order(),
        statements_per_order: script.statements_per_order(),
    })
}

/// `url` with the session's `search_path` set to `schema` (a libpq/sqlx `options`
/// parameter), so unqualified table names land in that schema.
fn with_search_path(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{schema}")
}

// ---------------------------------------------------------------------------------
// The system under test.

/// The system under test: phase 2's services, or the very same services with phase 3's
/// instrumentation around them (`phase3-observability all` takes all of phase 2's
/// flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Subject {
    Phase2,
    Phase3,
}

impl Subject {
    /// Its package, which is also the name of its binary.
    pub(crate) fn package(self) -> &'static str {
        match self {
            Subject::Phase2 => "phase2-events",
            Subject::Phase3 => "phase3-observability",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Subject::Phase2 => "phase2",
            Subject::Phase3 => "phase3",
        }
    }

    /// The process's name as the kernel keeps it (`/proc/PID/comm`): the binary's
    /// name cut to 15 bytes.
    fn comm(self) -> &'static str {
        match self {
            Subject::Phase2 => "phase2-events",
            Subject::Phase3 => "phase3-observab",
        }
    }

    /// How a program of [`Subject::cpu_programs`] is shown: the subject's process by
    /// its binary's name, not the kernel's.
    fn shown(self, name: &'static str) -> &'static str {
        if name == self.comm() {
            self.package()
        } else {
            name
        }
    }

    /// [`CPU_PROGRAMS`], with this subject's process in phase 2's place.
    fn cpu_programs(self) -> Vec<&'static str> {
        CPU_PROGRAMS
            .iter()
            .map(|&name| {
                if name == Subject::Phase2.comm() {
                    self.comm()
                } else {
                    name
                }
            })
            .collect()
    }
}

/// The payment provider a system under test gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Provider {
    /// Never fails, declines or waits: the benchmark measures the machinery.
    Perfect,
    /// Phase 2's defaults (2–5 s, 30 % failures, 5 % declines): what a learner runs.
    Defaults,
}

/// Starts `setup.subject` with every service in one process and a perfect provider,
/// and waits until it is ready (the order API's `/ready`; phase 3's ops server's too).
pub(crate) async fn start_system(setup: &Setup) -> anyhow::Result<Server> {
    start_system_with(setup, Provider::Perfect).await
}

/// [`start_system`] with the provider of choice.
pub(crate) async fn start_system_with(setup: &Setup, payments: Provider) -> anyhow::Result<Server> {
    let [api, notification, provider] =
        [free_local_addr()?, free_local_addr()?, free_local_addr()?];
    let urls: Vec<String> = DATABASES
        .iter()
        .map(|(_, name)| setup.database_url(name))
        .collect();
    let partitions = PARTITIONS.to_string();
    let (api_s, notification_s, provider_s) = (
        api.to_string(),
        notification.to_string(),
        provider.to_string(),
    );
    let mut flags = vec![
        "all",
        "--brokers",
        &setup.brokers,
        "--namespace",
        &setup.namespace,
        "--partitions",
        &partitions,
        "--order-database-url",
        &urls[0],
        "--payment-database-url",
        &urls[1],
        "--inventory-database-url",
        &urls[2],
        "--delivery-database-url",
        &urls[3],
        "--redis-url",
        &setup.redis_url,
        "--addr",
        &api_s,
        "--notification-addr",
        &notification_s,
        "--provider-addr",
        &provider_s,
        "--prepare-after",
        "0s",
        "--dispatch-after",
        "0s",
        "--deliver-after",
        "0s",
    ];
    if payments == Provider::Perfect {
        flags.extend(crate::bench::PERFECT_PROVIDER);
    }
    flags.extend(setup.extra_args.iter().map(String::as_str));
    let ops_s = setup.ops_addr.map(|addr| addr.to_string());
    let mut env = Vec::new();
    if setup.subject == Subject::Phase3 {
        let ops = ops_s
            .as_deref()
            .context("phase 3 needs the address of its ops server")?;
        flags.extend(["--ops-addr", ops]);
        // Traces go where this run says, not where the caller's shell points.
        env.extend(
            std::env::vars_os()
                .filter_map(|(key, _)| key.into_string().ok())
                .filter(|key| key.starts_with("OTEL_"))
                .map(|key| (key, None)),
        );
        if let Some(endpoint) = &setup.otlp_endpoint {
            env.push((
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                Some(endpoint.clone()),
            ));
        }
    }
    println!(
        "\nthe system: every service in one process, fresh databases, namespace {}",
        setup.namespace
    );
    let mut server = Server::start_with_env(
        &format!("{} all", setup.subject.package()),
        &setup.bin,
        &flags,
        &env,
        api,
        &setup.dir.join("system.log"),
    )?;
    server.wait_for("/ready", Duration::from_secs(90)).await?;
    if let Some(ops) = setup.ops_addr {
        wait_ok(
            &mut server,
            &format!("http://{ops}/ready"),
            Duration::from_secs(30),
        )
        .await?;
    }
    // Enough stock for every order of the run (the migration seeds 1,000 each).
    psql::execute(&urls[2], "UPDATE stock SET available = 1000000")?;
    Ok(server)
}

/// Polls `GET url` until it answers 200 while `server` runs, for up to `limit`.
async fn wait_ok(server: &mut Server, url: &str, limit: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + limit;
    loop {
        server.check_running()?;
        if let Ok(response) = client.get(url).send().await
            && response.status() == reqwest::StatusCode::OK
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("GET {url} did not answer 200 within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What [`drive`] measured.
struct Runs {
    latency: LatencyRun,
    saturation: SaturationRun,
    overload: OverloadRun,
    batch: BatchSizes,
    /// Resident memory of each program once primed and idle, in MiB.
    idle_rss_mib: Option<Vec<(String, f64)>>,
}

/// Priming, then the saturation, latency and overload runs, against a running system.
async fn drive(args: &BenchArgs, setup: &Setup, server: &mut Server) -> anyhow::Result<Runs> {
    let p2 = &args.phase2;
    let observer = prime(setup, server).await?;
    let url = format!("http://{}/orders", server.addr());
    let idle_rss_mib = rss_mib(setup.subject);

    println!(
        "\nsaturation run: {} orders in the system for {:?} (first {:?} not measured)…",
        p2.saturation_in_flight, p2.saturation_duration, args.warmup
    );
    let probe = QueueProbe::new(setup).await?;
    let plan = SaturationPlan {
        in_flight: p2.saturation_in_flight,
        duration: p2.saturation_duration,
        warmup: args.warmup,
    };
    let since = common::db::timestamp(common::db::now());
    let (saturation, unfinished) =
        saturation_run(&plan, setup.subject, &url, &observer, &probe).await?;
    server.check_running()?;
    let batch = batch_sizes(setup, &since)?;
    println!(
        "consumers applied {:.1} events per database transaction ({} events, {} transactions)",
        batch.events_per_transaction, batch.events, batch.transactions
    );
    // The latency run starts on an idle system.
    drain(&observer, &unfinished).await;

    let rate = p2
        .latency_rate
        .unwrap_or_else(|| half_rate(saturation.finished_per_second));
    println!(
        "\nlatency run: {rate} orders/s arriving for {:?} (first {:?} not measured)…",
        p2.latency_duration, args.warmup
    );
    let plan = LatencyPlan {
        rate,
        rate_from_saturation: p2.latency_rate.is_none(),
        duration: p2.latency_duration,
        warmup: args.warmup,
    };
    let latency = latency_run(&plan, &url, &observer).await?;
    server.check_running()?;

    let rate = p2
        .overload_rate
        .unwrap_or_else(|| (2.0 * saturation.finished_per_second).round().max(1.0));
    println!(
        "\noverload run: {rate} orders/s arriving for {:?} (first {:?} not measured)…",
        p2.overload_duration, args.warmup
    );
    let mut overload = overload_run(args, rate, &url, &observer).await?;
    overload.queues_at_end = probe.sample().await.ok();
    // Does the backlog drain once the burst is over?
    let drained = Instant::now();
    let left = observer
        .wait_for(&overload.unfinished, Duration::from_secs(120))
        .await;
    overload.drained_after_s = (left == 0).then(|| drained.elapsed().as_secs_f64());
    overload.left_after_drain = left;
    server.check_running()?;
    observer.stop().await;
    Ok(Runs {
        latency,
        saturation,
        overload,
        batch,
        idle_rss_mib,
    })
}

/// The learner's case: primed, then a saturation run with `--learner-in-flight`
/// orders in the system.
async fn learner_run(
    args: &BenchArgs,
    setup: &Setup,
    server: &mut Server,
) -> anyhow::Result<SaturationRun> {
    let p2 = &args.phase2;
    let observer = prime(setup, server).await?;
    let url = format!("http://{}/orders", server.addr());
    println!(
        "\nsaturation run, provider at its defaults: {} orders in the system for {:?} (first \
         {:?} not measured)…",
        p2.learner_in_flight, p2.saturation_duration, args.warmup
    );
    let probe = QueueProbe::new(setup).await?;
    let plan = SaturationPlan {
        in_flight: p2.learner_in_flight,
        duration: p2.saturation_duration,
        warmup: args.warmup,
    };
    let (run, _) = saturation_run(&plan, setup.subject, &url, &observer, &probe).await?;
    server.check_running()?;
    observer.stop().await;
    Ok(run)
}

/// Resident memory of each of `subject`'s programs now, in MiB.
fn rss_mib(subject: Subject) -> Option<Vec<(String, f64)>> {
    let programs = subject.cpu_programs();
    let used = proc_use(&programs)?;
    Some(
        programs
            .iter()
            .zip(used.rss_bytes)
            .map(|(&name, bytes)| {
                (
                    subject.shown(name).to_owned(),
                    bytes as f64 / (1 << 20) as f64,
                )
            })
            .collect(),
    )
}

/// The latency run's default arrival rate: half the sustained one, to 0.1/s, at
/// least 0.5/s.
pub(crate) fn half_rate(sustained_per_second: f64) -> f64 {
    (sustained_per_second / 2.0 * 10.0).round().max(5.0) / 10.0
}

/// Waits (up to [`DRAIN_LIMIT`]) for `unfinished` orders to finish.
pub(crate) async fn drain(observer: &Observer, unfinished: &[String]) {
    let left = observer.wait_for(unfinished, DRAIN_LIMIT).await;
    if left > 0 {
        eprintln!("{left} orders of the saturation run still unfinished after {DRAIN_LIMIT:?}");
    }
}

/// Starts the observer on the running system, and sends a few orders all the way
/// through, so every consumer group (and the observer's) has its partitions before
/// anything is measured.
pub(crate) async fn prime(setup: &Setup, server: &mut Server) -> anyhow::Result<Observer> {
    let topics = Topics::new(&setup.namespace);
    let observer = Observer::start(
        &setup.brokers,
        &topics.orders,
        &topics.namespaced("bench-observer"),
    )?;
    let url = format!("http://{}/orders", server.addr());

    // Priming: a few orders all the way through, so every consumer group (and the
    // observer's) has its partitions before anything is measured.
    let primed = Instant::now();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut ids = Vec::new();
    for n in 0..PRIMING_ORDERS {
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .body(order_body(1_000_000 + n))
            .send()
            .await
            .context("priming: POST /orders")?;
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match (status.as_u16(), location.as_deref().and_then(order_id_of)) {
            (202, Some(id)) => ids.push(id),
            _ => bail!(
                "priming: POST /orders answered {status}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }
    let missing = observer.wait_for(&ids, Duration::from_secs(90)).await;
    server.check_running()?;
    if missing > 0 {
        bail!(
            "priming: {missing} of {PRIMING_ORDERS} orders did not reach a final state within \
             90 s; end of {}:\n{}",
            setup.dir.join("system.log").display(),
            process::tail(&setup.dir.join("system.log"), 20)
        );
    }
    println!(
        "primed: {PRIMING_ORDERS} orders delivered in {:.1} s (consumer groups joined)",
        primed.elapsed().as_secs_f64()
    );
    Ok(observer)
}

/// `/orders/0195…` → `0195…`.
fn order_id_of(location: &str) -> Option<String> {
    location
        .rsplit('/')
        .next()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// What a latency run does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LatencyPlan {
    /// Orders arriving per second.
    pub(crate) rate: f64,
    /// `rate` is half a saturation run's (no --latency-rate).
    pub(crate) rate_from_saturation: bool,
    /// How long orders arrive (the first `warmup` is not measured).
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
}

/// What a saturation run does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SaturationPlan {
    /// Orders in the system at any time.
    pub(crate) in_flight: u16,
    /// How long (the first `warmup` is not measured).
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
}

#[derive(Debug, Serialize)]
pub(crate) struct LatencyRun {
    offered_per_second: f64,
    /// The rate is half the saturation run's (no --latency-rate).
    rate_from_saturation: bool,
    seconds: f64,
    measured_seconds: f64,
    /// Measured requests (due after the warm-up).
    measured: usize,
    accepted: usize,
    pub(crate) api_errors: usize,
    not_sent: u64,
    first_error: Option<String>,
    pub(crate) api: Percentiles,
    pub(crate) delivered: usize,
    pub(crate) cancelled: usize,
    /// Accepted, but no final event within [`DRAIN_LIMIT`] after the run.
    pub(crate) incomplete: usize,
    pub(crate) end_to_end: Percentiles,
    /// The measured API latencies, in µs (to merge runs).
    #[serde(skip)]
    pub(crate) api_us: Histogram<u64>,
    /// The measured end-to-end latencies, in µs (to merge runs).
    #[serde(skip)]
    pub(crate) end_to_end_us: Histogram<u64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

impl Percentiles {
    pub(crate) fn of(histogram: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        if histogram.is_empty() {
            return Percentiles {
                p50_ms: f64::NAN,
                p99_ms: f64::NAN,
                max_ms: f64::NAN,
            };
        }
        Percentiles {
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

pub(crate) async fn latency_run(
    plan: &LatencyPlan,
    url: &str,
    observer: &Observer,
) -> anyhow::Result<LatencyRun> {
    let load = OpenLoad {
        url: url.to_owned(),
        rate: plan.rate,
        duration: plan.duration,
        max_in_flight: MAX_IN_FLIGHT,
        body: order_body,
        fresh_connections: false,
    };
    let report = open::open_loop(&load).await?;
    let measure_from = report.start + plan.warmup;
    let measured: Vec<&Outcome> = report
        .outcomes
        .iter()
        .filter(|o| o.due >= measure_from)
        .collect();
    let mut api = load::histogram();
    let mut due_of = HashMap::new();
    let mut first_error = None;
    for outcome in &measured {
        api.saturating_record(micros(outcome.latency()));
        match &outcome.result {
            Ok(answer) => {
                if let Some(id) = answer.location.as_deref().and_then(order_id_of) {
                    due_of.insert(id, outcome.due);
                }
            }
            Err(error) => {
                first_error.get_or_insert_with(|| error.clone());
            }
        }
    }
    let ids: Vec<String> = due_of.keys().cloned().collect();
    let incomplete = observer.wait_for(&ids, DRAIN_LIMIT).await;
    let mut end_to_end = load::histogram();
    let (mut delivered, mut cancelled) = (0, 0);
    for (id, due) in &due_of {
        if let Some(done) = observer.final_of(id) {
            end_to_end.saturating_record(micros(done.at.saturating_duration_since(*due)));
            if done.delivered {
                delivered += 1;
            } else {
                cancelled += 1;
            }
        }
    }
    let api_errors = measured.iter().filter(|o| !o.is_success()).count();
    Ok(LatencyRun {
        offered_per_second: plan.rate,
        rate_from_saturation: plan.rate_from_saturation,
        seconds: plan.duration.as_secs_f64(),
        measured_seconds: plan.duration.saturating_sub(plan.warmup).as_secs_f64(),
        measured: measured.len(),
        accepted: measured.len() - api_errors,
        api_errors,
        not_sent: report.not_sent,
        first_error,
        api: Percentiles::of(&api),
        delivered,
        cancelled,
        incomplete,
        end_to_end: Percentiles::of(&end_to_end),
        api_us: api,
        end_to_end_us: end_to_end,
    })
}

#[derive(Debug, Serialize)]
pub(crate) struct SaturationRun {
    in_flight: u16,
    seconds: f64,
    window_seconds: f64,
    /// Orders finished per second in the window: the sustained end-to-end rate.
    pub(crate) finished_per_second: f64,
    pub(crate) finished: usize,
    pub(crate) cancelled: usize,
    pub(crate) api_errors: usize,
    first_error: Option<String>,
    /// POST → 202, with the system saturated.
    api: Percentiles,
    /// POST → final event of the orders finished in the window (with `in_flight`
    /// orders ahead in the queues).
    end_to_end: Percentiles,
    /// Where the orders waited, on average over the window.
    queues: Option<Queues>,
    /// CPU used by each program during the window, in % of one core (Linux only).
    pub(crate) cpu: Option<Vec<(String, f64)>>,
    /// The most resident memory each program held at once during the window (all its
    /// processes together), in MiB, sampled every 2 s (Linux only).
    pub(crate) peak_rss_mib: Option<Vec<(String, f64)>>,
}

/// The programs whose CPU time is shown (by process name; all processes of a name
/// together, e.g. every PostgreSQL backend).
const CPU_PROGRAMS: &[&str] = &[
    // Apache Kafka: the JVM.
    "java",
    "postgres",
    "phase2-events",
    "redis-server",
    crate::bench::LOAD_GENERATOR,
];

/// What all processes of each name in `names` have used so far: CPU seconds
/// (`utime` + `stime`) and resident memory in bytes, summed over the processes of a
/// name (e.g. every PostgreSQL backend), read from /proc with the `procfs` crate.
/// `None` where there is no /proc.
#[derive(Debug, Clone)]
pub(crate) struct ProcUse {
    pub(crate) cpu_seconds: Vec<f64>,
    pub(crate) rss_bytes: Vec<u64>,
}

#[cfg(target_os = "linux")]
pub(crate) fn proc_use(names: &[&str]) -> Option<ProcUse> {
    let mut used = ProcUse {
        cpu_seconds: vec![0.0; names.len()],
        rss_bytes: vec![0; names.len()],
    };
    let ticks = procfs::ticks_per_second() as f64;
    let page = procfs::page_size();
    for process in procfs::process::all_processes().ok()?.flatten() {
        // A process may end between the listing and the read: skip it.
        let Ok(stat) = process.stat() else { continue };
        let Some(i) = names.iter().position(|n| *n == stat.comm) else {
            continue;
        };
        used.cpu_seconds[i] += (stat.utime + stat.stime) as f64 / ticks;
        used.rss_bytes[i] += stat.rss * page;
    }
    Some(used)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn proc_use(_names: &[&str]) -> Option<ProcUse> {
    None
}

/// Closed loop over the whole journey: each of `in_flight` customers places an
/// order, waits for its final event, and places the next.
/// Also returns the orders still unfinished at the end.
/// CPU use is noted for `subject`'s programs ([`CPU_PROGRAMS`]).
pub(crate) async fn saturation_run(
    plan: &SaturationPlan,
    subject: Subject,
    url: &str,
    observer: &Observer,
    probe: &QueueProbe,
) -> anyhow::Result<(SaturationRun, Vec<String>)> {
    let programs = subject.cpu_programs();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(usize::from(plan.in_flight))
        .build()?;
    let start = Instant::now();
    let from = start + plan.warmup;
    let end = start + plan.duration;
    let window = end.saturating_duration_since(from);
    anyhow::ensure!(
        !window.is_zero(),
        "--saturation-duration must be longer than --warmup"
    );

    /// What one customer saw.
    #[derive(Default)]
    struct Customer {
        api_us: Vec<u64>,
        /// (sent, finished) of every order that finished before the end.
        journeys: Vec<(Instant, Final)>,
        errors: usize,
        first_error: Option<String>,
        /// The order still under way when the run ended.
        unfinished: Option<String>,
    }
    let customer = |worker: u64| {
        let client = client.clone();
        async move {
            let mut seen = Customer::default();
            let mut n = 0;
            while Instant::now() < end {
                let sent = Instant::now();
                let body = order_body(2_000_000 + worker * 100_000 + n);
                n += 1;
                let response = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let answered = Instant::now();
                let id = match response {
                    Ok(response) if response.status().is_success() => response
                        .headers()
                        .get("location")
                        .and_then(|v| v.to_str().ok())
                        .and_then(order_id_of),
                    Ok(response) => {
                        let status = response.status();
                        let text = response.text().await.unwrap_or_default();
                        seen.first_error
                            .get_or_insert_with(|| format!("{status}: {text}"));
                        None
                    }
                    Err(err) => {
                        seen.first_error.get_or_insert_with(|| format!("{err:#}"));
                        None
                    }
                };
                if sent >= from {
                    seen.api_us.push(micros(answered - sent));
                }
                let Some(id) = id else {
                    seen.errors += 1;
                    // Do not hammer a failing server in a tight loop.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                match observer.wait_final(&id, end).await {
                    Some(done) => seen.journeys.push((sent, done)),
                    None => {
                        seen.unfinished = Some(id);
                        break;
                    }
                }
            }
            seen
        }
    };
    // Meanwhile, every 2 s of the measured window: where do the orders wait?
    let sampling = async {
        let mut samples = Vec::new();
        tokio::time::sleep_until(from).await;
        let before = proc_use(&programs);
        let mut peak_rss = before.as_ref().map(|u| u.rss_bytes.clone());
        while Instant::now() < end {
            match probe.sample().await {
                Ok(sample) => samples.push(sample),
                Err(err) => eprintln!("queue probe: {err:#}"),
            }
            if let (Some(peak), Some(now)) = (&mut peak_rss, proc_use(&programs)) {
                for (p, n) in peak.iter_mut().zip(now.rss_bytes) {
                    *p = (*p).max(n);
                }
            }
            // The CPU times are read at the end of the window, not up to 2 s later.
            tokio::time::sleep_until(end.min(Instant::now() + Duration::from_secs(2))).await;
        }
        let cpu = before.zip(proc_use(&programs)).map(|(before, after)| {
            let seconds = (Instant::now() - from).as_secs_f64();
            programs
                .iter()
                .zip(before.cpu_seconds.iter().zip(&after.cpu_seconds))
                .map(|(&name, (b, a))| (subject.shown(name).to_owned(), 100.0 * (a - b) / seconds))
                .collect()
        });
        let peak_rss_mib = peak_rss.map(|peak| {
            programs
                .iter()
                .zip(peak)
                .map(|(&name, bytes)| {
                    (
                        subject.shown(name).to_owned(),
                        bytes as f64 / (1 << 20) as f64,
                    )
                })
                .collect()
        });
        (samples, cpu, peak_rss_mib)
    };
    let (customers, (samples, cpu, peak_rss_mib)) = tokio::join!(
        futures::future::join_all((0..u64::from(plan.in_flight)).map(customer)),
        sampling
    );

    let (mut api, mut end_to_end) = (load::histogram(), load::histogram());
    let (mut finished, mut cancelled, mut api_errors, mut first_error) = (0, 0, 0, None);
    let mut unfinished = Vec::new();
    for seen in customers {
        unfinished.extend(seen.unfinished);
        for us in seen.api_us {
            api.saturating_record(us);
        }
        for (sent, done) in seen.journeys {
            if done.at >= from && done.at < end {
                finished += 1;
                if !done.delivered {
                    cancelled += 1;
                }
                end_to_end.saturating_record(micros(done.at - sent));
            }
        }
        api_errors += seen.errors;
        first_error = first_error.or(seen.first_error);
    }
    let run = SaturationRun {
        in_flight: plan.in_flight,
        seconds: plan.duration.as_secs_f64(),
        window_seconds: window.as_secs_f64(),
        finished_per_second: finished as f64 / window.as_secs_f64(),
        finished,
        cancelled,
        api_errors,
        first_error,
        api: Percentiles::of(&api),
        end_to_end: Percentiles::of(&end_to_end),
        queues: Queues::mean(&samples),
        cpu,
        peak_rss_mib,
    };
    Ok((run, unfinished))
}

#[derive(Debug, Serialize)]
struct OverloadRun {
    offered_per_second: f64,
    seconds: f64,
    /// From the end of the warm-up to the last arrival.
    window_seconds: f64,
    /// 2xx answers per second in the window.
    accepted_per_second: f64,
    /// Final events per second in the window: the sustained end-to-end rate.
    finished_per_second: f64,
    /// Of those, cancelled (there should be none).
    cancelled: usize,
    /// Final events of this run's orders in each second since the first arrival.
    finished_each_second: Vec<usize>,
    /// Accepted but not finished when the last order arrived.
    backlog_at_end: usize,
    api_errors: usize,
    not_sent: u64,
    first_error: Option<String>,
    api: Percentiles,
    /// Where the orders waited when the last one had arrived.
    queues_at_end: Option<Queues>,
    /// Accepted orders not final when the run was judged.
    #[serde(skip)]
    unfinished: Vec<String>,
    /// Seconds after the run until every accepted order was final (none: not within
    /// two minutes).
    drained_after_s: Option<f64>,
    /// Accepted orders still not final two minutes after the run.
    left_after_drain: usize,
}

async fn overload_run(
    args: &BenchArgs,
    rate: f64,
    url: &str,
    observer: &Observer,
) -> anyhow::Result<OverloadRun> {
    let p2 = &args.phase2;
    let load = OpenLoad {
        url: url.to_owned(),
        rate,
        duration: p2.overload_duration,
        max_in_flight: MAX_IN_FLIGHT,
        body: order_body,
        fresh_connections: false,
    };
    let report = open::open_loop(&load).await?;
    let from = report.start + args.warmup;
    let to = report.start + p2.overload_duration;
    let window = to.saturating_duration_since(from);
    anyhow::ensure!(
        !window.is_zero(),
        "--overload-duration must be longer than --warmup"
    );
    let in_window = |at: Instant| at >= from && at < to;

    let mut api = load::histogram();
    let mut ids = HashSet::new();
    let mut accepted_in_window = 0;
    let mut first_error = None;
    for outcome in &report.outcomes {
        if outcome.due >= from {
            api.saturating_record(micros(outcome.latency()));
        }
        match &outcome.result {
            Ok(answer) => {
                if in_window(outcome.done) {
                    accepted_in_window += 1;
                }
                if let Some(id) = answer.location.as_deref().and_then(order_id_of) {
                    ids.insert(id);
                }
            }
            Err(error) => {
                first_error.get_or_insert_with(|| error.clone());
            }
        }
    }
    let seconds = p2.overload_duration.as_secs_f64().ceil() as usize;
    let mut each_second = vec![0; seconds];
    let (mut finished, mut cancelled, mut finished_before_end) = (0, 0, 0);
    let unfinished = observer.unfinished_of(&ids);
    for done in observer.finals_of(&ids) {
        if done.at < to {
            finished_before_end += 1;
            let second = done.at.saturating_duration_since(report.start).as_secs() as usize;
            if let Some(count) = each_second.get_mut(second) {
                *count += 1;
            }
        }
        if in_window(done.at) {
            finished += 1;
            if !done.delivered {
                cancelled += 1;
            }
        }
    }
    let api_errors = report.outcomes.iter().filter(|o| !o.is_success()).count();
    Ok(OverloadRun {
        offered_per_second: rate,
        seconds: p2.overload_duration.as_secs_f64(),
        window_seconds: window.as_secs_f64(),
        accepted_per_second: accepted_in_window as f64 / window.as_secs_f64(),
        finished_per_second: finished as f64 / window.as_secs_f64(),
        cancelled,
        finished_each_second: each_second,
        backlog_at_end: ids.len().saturating_sub(finished_before_end),
        api_errors,
        not_sent: report.not_sent,
        first_error,
        api: Percentiles::of(&api),
        queues_at_end: None,
        unfinished,
        drained_after_s: None,
        left_after_drain: 0,
    })
}

// ---------------------------------------------------------------------------------
// Where orders wait: the outboxes and the consumer groups.

/// How much waits in each queue an order passes through.
#[derive(Debug, Clone, Serialize)]
struct Queues {
    /// Unpublished outbox rows, per service database.
    outbox: Vec<(String, f64)>,
    /// Messages a consumer group has not committed yet. Groups commit every second,
    /// so about a second's worth of messages counts here without waiting.
    lag: Vec<(String, f64)>,
}

impl Queues {
    fn mean(samples: &[Queues]) -> Option<Queues> {
        let first = samples.first()?;
        let n = samples.len() as f64;
        let average = |pick: fn(&Queues) -> &Vec<(String, f64)>| {
            pick(first)
                .iter()
                .enumerate()
                .map(|(i, (name, _))| {
                    let sum: f64 = samples.iter().map(|s| pick(s)[i].1).sum();
                    (name.clone(), sum / n)
                })
                .collect()
        };
        Some(Queues {
            outbox: average(|q| &q.outbox),
            lag: average(|q| &q.lag),
        })
    }

    fn describe(&self) -> String {
        let list = |items: &[(String, f64)]| {
            items
                .iter()
                .map(|(name, n)| format!("{name} {n:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "unpublished outbox rows: {}; consumer lag (≈1 s of it is the auto-commit \
             interval): {}",
            list(&self.outbox),
            list(&self.lag)
        )
    }
}

/// Reads the queue lengths of the system under test: the outboxes, and the lag of
/// each service's consumer group through phase 2's own [`LagProbe`] (one probe per
/// service, its group and topics from [`Service`] and [`Topics`]).
#[derive(Clone)]
pub(crate) struct QueueProbe {
    /// (service, database URL).
    /// One connection to each service database, opened once: a `psql` per sample
    /// would start a process and a PostgreSQL backend each time, and the benchmark
    /// would measure its own probe.
    databases: Vec<(&'static str, sqlx::AnyPool)>,
    /// One per service, in [`Service::ALL`]'s order.
    groups: Arc<Vec<(Service, LagProbe)>>,
}

impl std::fmt::Debug for QueueProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueProbe")
            .field("databases", &self.databases.len())
            .field("groups", &self.groups.len())
            .finish_non_exhaustive()
    }
}

impl QueueProbe {
    pub(crate) async fn new(setup: &Setup) -> anyhow::Result<QueueProbe> {
        let topics = Topics::new(&setup.namespace);
        let mut databases = Vec::new();
        for (service, name) in DATABASES {
            databases.push((
                service,
                common::db::connect(&setup.database_url(name), 1).await?,
            ));
        }
        let mut groups = Vec::new();
        for service in Service::ALL {
            let probe = LagProbe::new(
                &setup.brokers,
                &topics.group(service),
                topics.reads(service),
            )?;
            groups.push((service, probe));
        }
        Ok(QueueProbe {
            databases,
            groups: Arc::new(groups),
        })
    }

    async fn sample(&self) -> anyhow::Result<Queues> {
        let mut outbox = Vec::new();
        for (service, pool) in &self.databases {
            let backlog = phase2_events::outbox::backlog(pool).await?;
            outbox.push((service.to_string(), backlog as f64));
        }
        let probe = self.clone();
        let lag = tokio::task::spawn_blocking(move || probe.lag()).await??;
        Ok(Queues { outbox, lag })
    }

    /// Each group's lag: the services' probes, all their partitions' watermarks in two
    /// requests (blocking).
    fn lag(&self) -> anyhow::Result<Vec<(String, f64)>> {
        let probes: Vec<&LagProbe> = self.groups.iter().map(|(_, probe)| probe).collect();
        let samples = phase2_events::kafka::sample_all(&probes, Duration::from_secs(5))?;
        let lag = self
            .groups
            .iter()
            .zip(samples)
            .map(|((service, _), partitions)| {
                let behind: i64 = partitions.iter().map(|p| p.lag()).sum();
                (service.group().to_owned(), behind as f64)
            })
            .collect();
        Ok(lag)
    }
}

// ---------------------------------------------------------------------------------
// The observer: a downstream consumer of `orders`.

/// When an order's final event reached the observer.
#[derive(Debug, Clone, Copy)]
struct Final {
    at: Instant,
    /// `OrderDelivered`; otherwise `OrderCancelled`.
    delivered: bool,
}

/// Consumes `<namespace>.orders` in a group of its own and remembers the first final
/// event of each order (the key is the order id; redeliveries are ignored).
#[derive(Debug)]
pub(crate) struct Observer {
    finals: Arc<Mutex<HashMap<String, Final>>>,
    /// Woken at every final event (for [`Observer::wait_final`]).
    arrived: Arc<Notify>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    fn start(brokers: &str, topic: &str, group: &str) -> anyhow::Result<Observer> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            // No `fetch.wait.max.ms` of its own: Kafka answers a waiting fetch as soon
            // as a message is appended, so the wait adds nothing to the arrival time
            // measured.
            .create()
            .context("creating the observer's consumer")?;
        consumer.subscribe(&[topic])?;
        let finals: Arc<Mutex<HashMap<String, Final>>> = Arc::default();
        let arrived = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn(observe(
            consumer,
            finals.clone(),
            arrived.clone(),
            stop.clone(),
        ));
        Ok(Observer {
            finals,
            arrived,
            stop,
            task,
        })
    }

    /// The final event of order `id`, once it arrives; `None` if it has not by `until`.
    async fn wait_final(&self, id: &str, until: Instant) -> Option<Final> {
        loop {
            // Registered before the check, so an arrival in between is not missed.
            let arrived = self.arrived.notified();
            if let Some(done) = self.final_of(id) {
                return Some(done);
            }
            if tokio::time::timeout_at(until, arrived).await.is_err() {
                return self.final_of(id);
            }
        }
    }

    fn final_of(&self, id: &str) -> Option<Final> {
        self.finals.lock().expect("not poisoned").get(id).copied()
    }

    fn finals_of(&self, ids: &HashSet<String>) -> Vec<Final> {
        let finals = self.finals.lock().expect("not poisoned");
        ids.iter()
            .filter_map(|id| finals.get(id).copied())
            .collect()
    }

    /// The orders of `ids` without a final event yet.
    fn unfinished_of(&self, ids: &HashSet<String>) -> Vec<String> {
        let finals = self.finals.lock().expect("not poisoned");
        ids.iter()
            .filter(|id| !finals.contains_key(id.as_str()))
            .cloned()
            .collect()
    }

    /// Waits until every order in `ids` has finished, or `limit` passed; returns how
    /// many have not.
    async fn wait_for(&self, ids: &[String], limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let missing = {
                let finals = self.finals.lock().expect("not poisoned");
                ids.iter().filter(|id| !finals.contains_key(*id)).count()
            };
            if missing == 0 || Instant::now() >= deadline {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn observe(
    consumer: StreamConsumer,
    finals: Arc<Mutex<HashMap<String, Final>>>,
    arrived: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut errors = 0u64;
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            message = consumer.recv() => message,
        };
        let at = Instant::now();
        let message = match message {
            Ok(message) => message,
            Err(err) => {
                errors += 1;
                if errors == 1 {
                    eprintln!("observer: receive error (continuing): {err}");
                }
                continue;
            }
        };
        let event_type = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == "event_type")
                .and_then(|h| h.value)
        });
        let delivered = match event_type {
            Some(t) if t == event::ORDER_DELIVERED.as_bytes() => true,
            Some(t) if t == event::ORDER_CANCELLED.as_bytes() => false,
            _ => continue,
        };
        let Some(id) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            continue;
        };
        finals
            .lock()
            .expect("not poisoned")
            .entry(id.to_owned())
            .or_insert(Final { at, delivered });
        arrived.notify_waiters();
    }
}

// ---------------------------------------------------------------------------------
// The report.

#[derive(Debug, Serialize)]
struct Results {
    benchmark: &'static str,
    cores: usize,
    namespace: String,
    warmup_s: f64,
    latency: LatencyRun,
    saturation: SaturationRun,
    overload: OverloadRun,
    /// The saturation run with the provider at its defaults.
    learner: Option<SaturationRun>,
    batch: BatchSizes,
    idle_rss_mib: Option<Vec<(String, f64)>>,
    broker: BrokerLimit,
    /// pgbench, one event per commit and at the batch size the run saw.
    sql: Vec<SqlLimit>,
    /// The whole `cargo xtask bench phase2`, build included.
    seconds: f64,
    build_seconds: f64,
}

/// The figures the issue tracker asks for, by name (`--json PATH`).
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    /// Closed loop, perfect provider: orders reaching a final state per second.
    sustained_orders_per_s: f64,
    /// pgbench running the statements the services run for an order, committed in
    /// batches of the size the run saw (`floor_batch`).
    floor_orders_per_s: Option<f64>,
    floor_batch: Option<usize>,
    /// The same statements one event per commit.
    floor_one_by_one_orders_per_s: Option<f64>,
    /// `sustained_orders_per_s / floor_orders_per_s`.
    sustained_over_floor: Option<f64>,
    /// Events the consumers applied per transaction in the saturation run.
    events_per_transaction: f64,
    /// Open model at half the sustained rate.
    latency_rate_per_s: f64,
    e2e_p50_ms: f64,
    e2e_p99_ms: f64,
    api_p99_ms: f64,
    overload_offered_per_s: f64,
    overload_completed_per_s: f64,
    overload_drained_after_s: Option<f64>,
    /// CPU time per finished order in the saturation run, by program, and
    /// `all_but_load_generator`.
    cpu_ms_per_order: std::collections::BTreeMap<String, f64>,
    /// Resident memory by program: primed and idle, and the peak under load.
    rss_mib: std::collections::BTreeMap<String, IdleAndLoad>,
    /// The saturation run with the provider at phase 2's defaults.
    sustained_default_provider_orders_per_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct IdleAndLoad {
    idle: f64,
    under_load: f64,
}

impl Results {
    pub(crate) fn summary(&self) -> Summary {
        let sat = &self.saturation;
        let at_batch = self.sql.iter().find(|s| s.batch > 1).or(self.sql.first());
        let mut cpu_ms_per_order = std::collections::BTreeMap::new();
        if let Some(cpu) = &sat.cpu {
            let per_order = |percent: f64| 10.0 * percent / sat.finished_per_second.max(1e-9);
            let mut all = 0.0;
            for (name, percent) in cpu {
                cpu_ms_per_order.insert(name.clone(), per_order(*percent));
                if name != crate::bench::LOAD_GENERATOR {
                    all += per_order(*percent);
                }
            }
            cpu_ms_per_order.insert("all_but_load_generator".into(), all);
        }
        let mut rss_mib = std::collections::BTreeMap::<String, IdleAndLoad>::new();
        for (name, mib) in self.idle_rss_mib.iter().flatten() {
            rss_mib.entry(name.clone()).or_default().idle = *mib;
        }
        for (name, mib) in sat.peak_rss_mib.iter().flatten() {
            rss_mib.entry(name.clone()).or_default().under_load = *mib;
        }
        Summary {
            sustained_orders_per_s: sat.finished_per_second,
            floor_orders_per_s: at_batch.map(|s| s.orders_per_second),
            sustained_over_floor: at_batch.map(|s| sat.finished_per_second / s.orders_per_second),
            floor_batch: at_batch.map(|s| s.batch),
            floor_one_by_one_orders_per_s: self
                .sql
                .iter()
                .find(|s| s.batch == 1)
                .map(|s| s.orders_per_second),
            events_per_transaction: self.batch.events_per_transaction,
            latency_rate_per_s: self.latency.offered_per_second,
            e2e_p50_ms: self.latency.end_to_end.p50_ms,
            e2e_p99_ms: self.latency.end_to_end.p99_ms,
            api_p99_ms: self.latency.api.p99_ms,
            overload_offered_per_s: self.overload.offered_per_second,
            overload_completed_per_s: self.overload.finished_per_second,
            overload_drained_after_s: self.overload.drained_after_s,
            cpu_ms_per_order,
            rss_mib,
            sustained_default_provider_orders_per_s: self
                .learner
                .as_ref()
                .map(|run| run.finished_per_second),
        }
    }
}

/// A saturation run's row: finished per second and POST → final event.
fn saturation_row(label: String, run: &SaturationRun, more: String) -> [String; 6] {
    let ms = |v: f64| format!("{v:.1}");
    [
        label,
        format!("{:.1} orders/s", run.finished_per_second),
        ms(run.end_to_end.p50_ms),
        ms(run.end_to_end.p99_ms),
        ms(run.end_to_end.max_ms),
        format!(
            "{} finished in {:.0} s ({} cancelled); {more}; {} errors",
            run.finished, run.window_seconds, run.cancelled, run.api_errors
        ),
    ]
}

fn print_table(r: &Results) {
    let (l, sat, o, b) = (&r.latency, &r.saturation, &r.overload, &r.broker);
    println!(
        "\n{}: {} cores shared by the load generator, the observer, the services, \
         PostgreSQL and the broker\n",
        r.benchmark, r.cores
    );
    let ms = |v: f64| format!("{v:.1}");
    let dash = || "–".to_owned();
    let mut rows: Vec<[String; 6]> = vec![
        [
            "measurement".into(),
            "rate".into(),
            "p50 ms".into(),
            "p99 ms".into(),
            "max ms".into(),
            "notes".into(),
        ],
        [
            format!(
                "API: POST /orders → 202, {} orders/s arriving (open model{})",
                l.offered_per_second,
                if l.rate_from_saturation {
                    ", ½ the sustained rate"
                } else {
                    ""
                }
            ),
            format!("{:.1} accepted/s", l.accepted as f64 / l.measured_seconds),
            ms(l.api.p50_ms),
            ms(l.api.p99_ms),
            ms(l.api.max_ms),
            format!(
                "{:.0} s measured; {} errors, {} not sent",
                l.measured_seconds, l.api_errors, l.not_sent
            ),
        ],
        [
            "end to end: POST → OrderDelivered seen on `orders` (same orders)".into(),
            format!("{:.1} delivered/s", l.delivered as f64 / l.measured_seconds),
            ms(l.end_to_end.p50_ms),
            ms(l.end_to_end.p99_ms),
            ms(l.end_to_end.max_ms),
            format!(
                "{} delivered, {} cancelled, {} unfinished {:.0} s after the last",
                l.delivered,
                l.cancelled,
                l.incomplete,
                DRAIN_LIMIT.as_secs_f64()
            ),
        ],
        saturation_row(
            format!(
                "sustained end to end: {} orders in the system (closed loop)",
                sat.in_flight
            ),
            sat,
            format!(
                "latency = POST → final event at saturation; API p50 {:.1} ms",
                sat.api.p50_ms
            ),
        ),
        [
            format!(
                "overload: {} orders/s arriving for {:.0} s (open model)",
                o.offered_per_second, o.seconds
            ),
            format!("{:.1} orders/s", o.finished_per_second),
            dash(),
            dash(),
            dash(),
            format!(
                "finished, last {:.0} s; {:.1}/s accepted (API p50 {:.1} ms); {} unfinished \
                 at the end, {}; {} errors",
                o.window_seconds,
                o.accepted_per_second,
                o.api.p50_ms,
                o.backlog_at_end,
                match o.drained_after_s {
                    Some(s) => format!("all final {s:.1} s later"),
                    None => format!("{} still not final 120 s later", o.left_after_drain),
                },
                o.api_errors
            ),
        ],
        [
            "limit: broker produce (idempotent, acks=all, linger 5 ms)".into(),
            format!(
                "{:.0} msgs/s = {:.0} orders/s",
                b.messages_per_second, b.orders_per_second
            ),
            dash(),
            dash(),
            dash(),
            format!(
                "{} × {} B to 3 partitions, {EVENTS_PER_ORDER} events per order; {} failed; \
                 one at a time (each ack awaited): {:.0} msgs/s",
                b.messages, b.message_bytes, b.failed, b.one_at_a_time_per_second
            ),
        ],
    ];
    if let Some(run) = &r.learner {
        rows.push(saturation_row(
            format!(
                "sustained, provider at its defaults (2–5 s, 30 % failures): {} orders in the system",
                run.in_flight
            ),
            run,
            "cancelled = declined or refused by the provider".into(),
        ));
    }
    for s in &r.sql {
        rows.push([
            format!(
                "limit: pgbench, the services' SQL, {} order{} per commit ({:.1} transactions per order)",
                s.batch,
                if s.batch == 1 { "" } else { "s" },
                s.transactions_per_order
            ),
            format!("{:.1} orders/s", s.orders_per_second),
            ms(s.p50_ms),
            ms(s.p99_ms),
            ms(s.max_ms),
            format!(
                "1 pgbench tx = {} order(s), {:.1} statements each; {} clients, {:.0} s; {} failed",
                s.batch, s.statements_per_order, s.clients, s.seconds, s.failed
            ),
        ]);
    }
    print_markdown(&rows, 1..=4);

    println!(
        "\nLatencies are measured from when an order was due (open model) or sent (closed \
         loop) to its 202, or to its final event reaching a consumer of `{}.orders`; the \
         first {:.0} s of each run are not measured.",
        r.namespace, r.warmup_s
    );
    if let Some(cpu) = &sat.cpu {
        let shown: Vec<String> = cpu
            .iter()
            .map(|(name, percent)| format!("{name} {percent:.0} %"))
            .collect();
        println!(
            "CPU during the saturation run, in % of one core ({} % = the whole machine): {}",
            100 * r.cores,
            shown.join(", ")
        );
    }
    if let Some(rss) = &sat.peak_rss_mib {
        let shown: Vec<String> = rss
            .iter()
            .map(|(name, mib)| format!("{name} {mib:.0} MiB"))
            .collect();
        println!(
            "Peak resident memory during the saturation run (a program's processes summed, so \
             memory they share counts once per process): {}",
            shown.join(", ")
        );
    }
    if let Some(queues) = &sat.queues {
        println!(
            "Where orders waited in the saturation run (mean): {}",
            queues.describe()
        );
    }
    println!(
        "Consumers applied {:.1} events per database transaction in the saturation run \
         ({} events, {} transactions).",
        r.batch.events_per_transaction, r.batch.events, r.batch.transactions
    );
    if let Some(rss) = &r.idle_rss_mib {
        let shown: Vec<String> = rss
            .iter()
            .map(|(name, mib)| format!("{name} {mib:.0} MiB"))
            .collect();
        println!("Resident memory, primed and idle: {}", shown.join(", "));
    }
    println!(
        "Orders finished in each second of the overload run: {:?}",
        o.finished_each_second
    );
    if let Some(queues) = &o.queues_at_end {
        println!(
            "Where orders waited at the end of the overload run: {}",
            queues.describe()
        );
    }
    if o.backlog_at_end == 0 || o.finished_per_second >= 0.97 * o.accepted_per_second {
        println!(
            "note: the system kept up with {} orders/s arriving: raise --overload-rate",
            o.offered_per_second
        );
    }
    if l.incomplete > 0 || l.end_to_end.p99_ms > 10_000.0 {
        println!(
            "note: the latency run's orders queued up: {} orders/s is above what the system \
             sustains; lower --latency-rate",
            l.offered_per_second
        );
    }
    for (run, error) in [
        ("latency", &l.first_error),
        ("saturation", &sat.first_error),
        ("overload", &o.first_error),
    ] {
        if let Some(error) = error {
            println!("{run} run: first API error: {error}");
        }
    }
}

/// A markdown table, padded so it also reads as plain text; the `numeric` columns
/// right-aligned.
pub(crate) fn print_markdown<const N: usize>(
    rows: &[[String; N]],
    numeric: std::ops::RangeInclusive<usize>,
) {
    let numeric = |column: usize| numeric.contains(&column);
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, width))| {
                let pad = " ".repeat(width - cell.chars().count());
                if numeric(c) && i > 0 {
                    format!("{pad}{cell}")
                } else {
                    format!("{cell}{pad}")
                }
            })
            .collect();
        println!("| {} |", cells.join(" | "));
        if i == 0 {
            let rule: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(c, w)| {
                    if numeric(c) {
                        format!("{}:", "-".repeat(w + 1))
                    } else {
                        "-".repeat(w + 2)
                    }
                })
                .collect();
            println!("|{}|", rule.join("|"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_id_is_the_last_segment_of_the_location() {
        assert_eq!(order_id_of("/orders/abc-1").as_deref(), Some("abc-1"));
        assert_eq!(order_id_of("/orders/"), None);
    }

    #[test]
    fn the_search_path_is_a_connection_option() {
        assert_eq!(
            with_search_path("postgres://h/db", "order_db"),
            "postgres://h/db?options=-c%20search_path%3Dorder_db"
        );
        assert_eq!(
            with_search_path("postgres://h/db?sslmode=disable", "x"),
            "postgres://h/db?sslmode=disable&options=-c%20search_path%3Dx"
        );
    }

    #[test]
    fn the_pgbench_script_has_no_stray_variables() {
        // With -M prepared, pgbench reads every `:name` as a variable; only the
        // order ids and outbox ids the script sets (`\gset`) may appear.
        for batch in [1, 3] {
            let script = pgbench::phase2_orders(sample_envelope().unwrap().len(), batch);
            let mut rest = script.sql.as_str();
            while let Some(i) = rest.find(':') {
                rest = &rest[i + 1..];
                if rest.starts_with(':') {
                    rest = rest.trim_start_matches(':');
                    continue;
                }
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let known =
                    (1..=batch).any(|i| name == format!("oid{i}") || name == format!("outbox{i}"));
                assert!(
                    name.is_empty() || known,
                    "unexpected pgbench variable :{name}"
                );
            }
        }
    }

    #[test]
    fn batching_leaves_one_commit_per_order_for_the_api_and_shares_the_rest() {
        // Per run of the script: one API transaction per order; the relays, the
        // consumers, the payment worker and the ticker commit once per run, whatever
        // the number of orders in it.
        let one = pgbench::phase2_orders(100, 1);
        let ten = pgbench::phase2_orders(100, 10);
        let shared = one.transactions - 1;
        assert_eq!(ten.transactions, 10 + shared);
        assert!(
            ten.transactions_per_order() < 4.0,
            "{}",
            ten.transactions_per_order()
        );
    }
}
