//! The six rehearsals. Each runs the base manifests and the misconfiguration overlay
//! it is about side by side (on the same machine, the same load), and ends in checks
//! that say whether the lesson happened — the misconfiguration breaking what the
//! base keeps — with the figures they were judged on.

use super::kubelet::{Deployment, Pod, Reason};
use super::manifest::{Scaler, Template};
use super::service::{Routed, Service};
use super::{Cluster, RehearseArgs, Report, Scenario, check, objects};
use anyhow::Context;
use phase4_chaos::load::open::{OpenLoad, open_loop};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Unanswered requests the load allows at once.
const MAX_IN_FLIGHT: usize = 256;
/// How long a pod may take to become ready.
const READY_LIMIT: Duration = Duration::from_secs(120);
/// How long `cpu-starved` waits for its pod to become ready before it measures anyway.
const STARVED_READY_LIMIT: Duration = Duration::from_secs(45);

pub async fn run(
    args: &RehearseArgs,
    scenario: Scenario,
    cluster: &Cluster,
) -> anyhow::Result<Report> {
    match scenario {
        Scenario::CpuStarved => cpu_starved(args, cluster).await,
        Scenario::MemoryTight => memory_tight(args, cluster).await,
        Scenario::LivenessOnDatabase => liveness_on_database(args, cluster).await,
        Scenario::TerminationDuringTraffic => termination_during_traffic(args, cluster).await,
        Scenario::Autoscaling => autoscaling(args, cluster).await,
        Scenario::PodKiller => pod_killer(args, cluster).await,
    }
}

/// What a client saw of a load run through a Service.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Load {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    /// Due, but no slot was free before the end (the server was that far behind).
    pub not_sent: u64,
    /// Latency of the answered requests, from when each was due.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Failures by kind (`connection refused`, `503`, `timeout` …).
    pub errors: BTreeMap<String, u64>,
}

/// The kind of a failed request, in a word or two.
fn error_kind(error: &str) -> String {
    let lower = error.to_ascii_lowercase();
    if let Some(status) = error.split(':').next().filter(|s| s.parse::<u16>().is_ok()) {
        status.to_owned()
    } else if lower.contains("no answer within") {
        "timeout".to_owned()
    } else if lower.contains("refused") {
        "connection refused".to_owned()
    } else if lower.contains("reset")
        || lower.contains("closed")
        || lower.contains("incomplete")
        || lower.contains("error sending request")
    {
        "connection closed".to_owned()
    } else {
        format!("other: {}", error.chars().take(120).collect::<String>())
    }
}

/// Orders placed at `rate` for `duration` through `service`, each on a new
/// connection (a Service routes connections, so each request is routed afresh).
pub async fn load(service: SocketAddr, rate: f64, duration: Duration) -> anyhow::Result<Load> {
    let report = open_loop(&OpenLoad {
        url: format!("http://{service}/orders"),
        rate,
        duration,
        max_in_flight: MAX_IN_FLIGHT,
        body: phase4_chaos::bench::order_body,
        fresh_connections: true,
    })
    .await?;
    let mut histogram = phase4_chaos::load::histogram();
    let mut load = Load {
        sent: report.outcomes.len() as u64,
        not_sent: report.not_sent,
        ..Load::default()
    };
    for outcome in &report.outcomes {
        match &outcome.result {
            Ok(_) => {
                load.ok += 1;
                let _ = histogram.record(outcome.latency().as_micros().max(1) as u64);
            }
            Err(error) => {
                load.failed += 1;
                *load.errors.entry(error_kind(error)).or_default() += 1;
            }
        }
    }
    let latency = phase4_chaos::load::run::Latency::of(&histogram);
    load.p50_ms = latency.p50_ms;
    load.p99_ms = latency.p99_ms;
    load.max_ms = latency.max_ms;
    Ok(load)
}

fn errors(load: &Load) -> String {
    if load.errors.is_empty() {
        return "none".to_owned();
    }
    load.errors
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn template(overlay: Option<&str>, deployment: &str) -> anyhow::Result<Template> {
    Template::of(&objects(overlay)?, deployment)
}

fn label(overlay: Option<&str>) -> &str {
    overlay.unwrap_or("base")
}

// ---------------------------------------------------------------------------------
// cpu-starved

#[derive(Debug, Clone, Serialize)]
struct CpuRun {
    manifests: String,
    cpu_limit_millis: Option<u64>,
    /// `None`: never ready within the limit.
    ready_after_s: Option<f64>,
    tokio_workers: Option<u64>,
    load: Load,
    routed: Routed,
    cpu_used_cores: f64,
    throttled_periods_percent: f64,
    throttled_s: f64,
}

/// The same load on one order API pod with the base CPU limit and with the starved
/// one: latency, throttling, and the worker threads the runtime chose.
pub async fn cpu_starved(args: &RehearseArgs, cluster: &Cluster) -> anyhow::Result<Report> {
    let rate = args.rate.unwrap_or(40.0);
    let duration = args.duration.unwrap_or(Duration::from_secs(20));
    let mut runs = Vec::new();
    for overlay in [None, Scenario::CpuStarved.overlay()] {
        cluster.variant(label(overlay))?;
        let template = template(overlay, "order")?;
        let limit = template.cpu_limit_millis;
        let deployment = cluster.deploy(template, &format!("order-{}", label(overlay)), 1)?;
        eprintln!(
            "rehearsal: order API, {} limits ({limit:?} millicores)…",
            label(overlay)
        );
        // A starved pod may never pass its readiness probe (its `SELECT 1` does not
        // finish in time): then it never gets traffic, which is a finding too.
        let startup = deployment.wait_ready(1, STARVED_READY_LIMIT).await.ok();
        let service = Service::start(deployment.clone(), "http", args.endpoint_lag).await?;
        if startup.is_some() {
            service.wait_endpoints(1, READY_LIMIT).await?;
        }
        load(service.addr(), rate, Duration::from_secs(3)).await?; // warm-up
        let pod = deployment.pods()[0].clone();
        let before = pod.usage();
        let measured = load(service.addr(), rate, duration).await?;
        let used = pod.usage().since(&before);
        let workers = pod.tokio_workers().await;
        deployment.delete().await;
        runs.push(CpuRun {
            manifests: label(overlay).to_owned(),
            cpu_limit_millis: limit,
            ready_after_s: startup.map(|s| s.as_secs_f64()),
            tokio_workers: workers,
            routed: service.routed(),
            cpu_used_cores: used.cpu_usec as f64 / duration.as_micros() as f64,
            throttled_periods_percent: used.throttled_ratio() * 100.0,
            throttled_s: used.throttled_usec as f64 / 1e6,
            load: measured,
        });
    }
    let mut table = format!(
        "{rate} orders/s for {duration:?} to one order API pod, through its Service\n\n\
         | manifests | CPU limit | ready after | tokio workers | p50 | p99 | failed | no ready endpoint | CPU used | throttled periods | time throttled |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for run in &runs {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} ms | {:.0} ms | {} of {} ({}) | {} | {:.3} cores | {:.0} % | {:.1} s |\n",
            run.manifests,
            run.cpu_limit_millis.map_or("none".to_owned(), |m| format!("{m}m")),
            run.ready_after_s.map_or(
                format!("never (in {} s)", STARVED_READY_LIMIT.as_secs()),
                |s| format!("{s:.1} s")
            ),
            run.tokio_workers.map_or("?".to_owned(), |w| w.to_string()),
            run.load.p50_ms,
            run.load.p99_ms,
            run.load.failed + run.load.not_sent,
            run.load.sent + run.load.not_sent,
            errors(&run.load),
            run.routed.no_endpoint,
            run.cpu_used_cores,
            run.throttled_periods_percent,
            run.throttled_s,
        ));
    }
    table.push_str(&format!(
        "\n(this machine has {} cores; the runtime sizes its worker pool from the CPU quota it finds)\n",
        std::thread::available_parallelism().map_or(0, usize::from)
    ));
    let (base, starved) = (&runs[0], &runs[1]);
    let checks = vec![
        check(
            "base: throttled in under 10 % of CPU periods",
            base.throttled_periods_percent < 10.0,
            format!("{:.1} %", base.throttled_periods_percent),
        ),
        check(
            "starved: its whole quota used, throttled in a quarter of its CPU periods or more",
            starved.throttled_periods_percent >= 25.0
                && starved.cpu_used_cores
                    >= 0.8 * starved.cpu_limit_millis.unwrap_or(0) as f64 / 1000.0,
            format!(
                "{:.3} cores of {:.3}; {:.0} % of periods, {:.1} s throttled",
                starved.cpu_used_cores,
                starved.cpu_limit_millis.unwrap_or(0) as f64 / 1000.0,
                starved.throttled_periods_percent,
                starved.throttled_s
            ),
        ),
        check(
            "starved: users see it (p99 at least 5 × the base's, or most requests failed)",
            starved.load.p99_ms >= 5.0 * base.load.p99_ms
                || 2 * (starved.load.failed + starved.load.not_sent) > starved.load.sent,
            format!(
                "p99 {:.0} ms vs {:.0} ms; {} of {} failed",
                starved.load.p99_ms,
                base.load.p99_ms,
                starved.load.failed + starved.load.not_sent,
                starved.load.sent + starved.load.not_sent
            ),
        ),
        check(
            "base: every request answered",
            base.load.failed + base.load.not_sent == 0,
            format!(
                "{} failed ({})",
                base.load.failed + base.load.not_sent,
                errors(&base.load)
            ),
        ),
    ];
    Ok(Report {
        scenario: Scenario::CpuStarved,
        table,
        checks,
        figures: serde_json::to_value(&runs)?,
        logs: Default::default(),
    })
}

// ---------------------------------------------------------------------------------
// memory-tight

#[derive(Debug, Clone, Serialize)]
struct MemoryRun {
    manifests: String,
    memory_limit_mib: f64,
    ever_ready: bool,
    load: Load,
    restarts: u32,
    oom_kills: u64,
    exits: Vec<super::kubelet::Exit>,
    memory_peak_mib: f64,
}

/// One order API pod under load with the base memory limit and the tight one.
pub async fn memory_tight(args: &RehearseArgs, cluster: &Cluster) -> anyhow::Result<Report> {
    let rate = args.rate.unwrap_or(100.0);
    let duration = args.duration.unwrap_or(Duration::from_secs(40));
    let mut runs = Vec::new();
    for overlay in [None, Scenario::MemoryTight.overlay()] {
        cluster.variant(label(overlay))?;
        let template = template(overlay, "order")?;
        let limit = template.memory_limit_bytes.unwrap_or(0) as f64 / 1048576.0;
        let deployment = cluster.deploy(template, &format!("order-{}", label(overlay)), 1)?;
        eprintln!(
            "rehearsal: order API, {} limits ({limit} MiB)…",
            label(overlay)
        );
        // A pod killed while it starts may never be ready: that is a finding too.
        let ever_ready = deployment
            .wait_ready(1, Duration::from_secs(60))
            .await
            .is_ok();
        let service = Service::start(deployment.clone(), "http", args.endpoint_lag).await?;
        if ever_ready {
            service.wait_endpoints(1, READY_LIMIT).await?;
        }
        let measured = load(service.addr(), rate, duration).await?;
        let pod = deployment.pods()[0].clone();
        let usage = pod.usage();
        deployment.delete().await;
        let exits: Vec<_> = pod
            .exits()
            .into_iter()
            .filter(|e| e.reason != Reason::Deleted)
            .collect();
        runs.push(MemoryRun {
            manifests: label(overlay).to_owned(),
            memory_limit_mib: limit,
            ever_ready,
            load: measured,
            restarts: pod.restarts(),
            oom_kills: usage.oom_kills,
            exits,
            memory_peak_mib: usage.memory_peak_bytes as f64 / 1048576.0,
        });
    }
    let mut table = format!(
        "{rate} orders/s for {duration:?} to one order API pod\n\n\
         | manifests | memory limit | peak | ready | restarts | OOM kills | exits (code, reason, when) | failed requests |\n\
         |---|---|---|---|---|---|---|---|\n"
    );
    for run in &runs {
        let exits = run
            .exits
            .iter()
            .map(|e| {
                format!(
                    "{} {} at {:.0} s",
                    e.code,
                    e.reason,
                    e.at_ms as f64 / 1000.0
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        table.push_str(&format!(
            "| {} | {:.0} MiB | {:.1} MiB | {} | {} | {} | {} | {} of {} |\n",
            run.manifests,
            run.memory_limit_mib,
            run.memory_peak_mib,
            if run.ever_ready { "yes" } else { "never" },
            run.restarts,
            run.oom_kills,
            if exits.is_empty() {
                "none".to_owned()
            } else {
                exits
            },
            run.load.failed + run.load.not_sent,
            run.load.sent + run.load.not_sent,
        ));
    }
    let (base, tight) = (&runs[0], &runs[1]);
    let oom_exits = tight
        .exits
        .iter()
        .filter(|e| e.reason == Reason::OomKilled && e.code == 137)
        .count();
    let checks = vec![
        check(
            "base: never OOM-killed nor restarted",
            base.oom_kills == 0 && base.restarts == 0,
            format!(
                "{} OOM kills, {} restarts, peak {:.1} MiB of {:.0}",
                base.oom_kills, base.restarts, base.memory_peak_mib, base.memory_limit_mib
            ),
        ),
        check(
            "tight: OOMKilled with exit code 137",
            oom_exits >= 1,
            format!(
                "{oom_exits} exits OOMKilled (137), {} kills by the kernel",
                tight.oom_kills
            ),
        ),
        check(
            "tight: restarted by the kubelet, backing off",
            tight.restarts >= 1,
            format!("{} restarts", tight.restarts),
        ),
    ];
    Ok(Report {
        scenario: Scenario::MemoryTight,
        table,
        checks,
        figures: serde_json::to_value(&runs)?,
        logs: Default::default(),
    })
}

// ---------------------------------------------------------------------------------
// liveness-on-database

#[derive(Debug, Clone, Serialize)]
struct LivenessRun {
    manifests: String,
    liveness_path: String,
    replicas: usize,
    restarted_replicas: usize,
    restarts: u32,
    /// Fewest ready replicas seen during the outage.
    fewest_ready: usize,
    /// From the database's return to every replica ready again.
    back_after_s: Option<f64>,
}

/// Two order API pods with the base probes and two whose liveness checks the
/// database, all reaching PostgreSQL through a fault proxy that goes down.
pub async fn liveness_on_database(
    args: &RehearseArgs,
    cluster: &Cluster,
) -> anyhow::Result<Report> {
    const REPLICAS: usize = 2;
    let postgres = postgres_addr(&cluster.admin_url)?;
    let proxy =
        phase2_events::fault_proxy::FaultProxy::start("127.0.0.1:0".parse()?, postgres).await?;
    let through = cluster.node().env["ORDER_DATABASE_URL"]
        .replace(&postgres.to_string(), &proxy.addr().to_string());
    let mut deployments = Vec::new();
    let mut longest = Duration::ZERO;
    for overlay in [None, Scenario::LivenessOnDatabase.overlay()] {
        let mut template = template(overlay, "order")?;
        template
            .overrides
            .insert("ORDER_DATABASE_URL".to_owned(), through.clone());
        let liveness = template
            .liveness
            .clone()
            .context("the order API has no liveness probe")?;
        longest = longest.max(liveness.period * (liveness.failure_threshold + 1));
        let name = format!("order-{}", label(overlay));
        deployments.push((
            overlay,
            liveness.path,
            cluster.deploy(template, &name, REPLICAS)?,
        ));
    }
    for (_, _, deployment) in &deployments {
        deployment.wait_ready(REPLICAS, READY_LIMIT).await?;
    }
    // Long enough for a liveness probe to fail `failureThreshold` times, and more.
    let outage = args.duration.unwrap_or(longest + Duration::from_secs(10));
    eprintln!("rehearsal: PostgreSQL unreachable for {outage:?}…");
    proxy.faults().set_down(true);
    let cut = Instant::now();
    let mut fewest = [REPLICAS; 2];
    while cut.elapsed() < outage {
        for (i, (_, _, deployment)) in deployments.iter().enumerate() {
            fewest[i] = fewest[i].min(deployment.ready());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    proxy.faults().set_down(false);
    let healed = Instant::now();
    eprintln!("rehearsal: PostgreSQL back; waiting for every replica to be ready…");
    let mut back: [Option<f64>; 2] = [None, None];
    while healed.elapsed() < Duration::from_secs(120) && back.iter().any(Option::is_none) {
        for (i, (_, _, deployment)) in deployments.iter().enumerate() {
            if back[i].is_none() && deployment.ready() == REPLICAS {
                back[i] = Some(healed.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut runs = Vec::new();
    for (i, (overlay, path, deployment)) in deployments.iter().enumerate() {
        let pods = deployment.history();
        runs.push(LivenessRun {
            manifests: label(*overlay).to_owned(),
            liveness_path: path.clone(),
            replicas: REPLICAS,
            restarted_replicas: pods.iter().filter(|p| p.restarts() > 0).count(),
            restarts: deployment.restarts(),
            fewest_ready: fewest[i],
            back_after_s: back[i],
        });
        deployment.delete().await;
    }
    proxy.stop().await;
    let mut table = format!(
        "PostgreSQL unreachable for {:.0} s under {REPLICAS} order API pods of each kind\n\n\
         | manifests | liveness probe | replicas restarted | restarts | fewest ready in the outage | all ready again after |\n\
         |---|---|---|---|---|---|\n",
        outage.as_secs_f64()
    );
    for run in &runs {
        table.push_str(&format!(
            "| {} | {} | {} of {} | {} | {} | {} |\n",
            run.manifests,
            run.liveness_path,
            run.restarted_replicas,
            run.replicas,
            run.restarts,
            run.fewest_ready,
            run.back_after_s
                .map_or("not within 120 s".to_owned(), |s| format!("{s:.1} s")),
        ));
    }
    let (good, bad) = (&runs[0], &runs[1]);
    let checks = vec![
        check(
            "base: no replica restarted",
            good.restarts == 0,
            format!("{} restarts", good.restarts),
        ),
        check(
            "base: out of the endpoints while the database was away (readiness)",
            good.fewest_ready == 0,
            format!("fewest ready {}", good.fewest_ready),
        ),
        check(
            "liveness on the database: every replica restarted",
            bad.restarted_replicas == bad.replicas,
            format!(
                "{} of {} replicas, {} restarts",
                bad.restarted_replicas, bad.replicas, bad.restarts
            ),
        ),
    ];
    Ok(Report {
        scenario: Scenario::LivenessOnDatabase,
        table,
        checks,
        figures: serde_json::to_value(&runs)?,
        logs: Default::default(),
    })
}

/// The host and port of a PostgreSQL URL.
fn postgres_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let url = reqwest::Url::parse(url).context("the PostgreSQL URL")?;
    let host = match url.host_str() {
        Some("localhost") | None => "127.0.0.1",
        Some(host) => host,
    };
    format!("{host}:{}", url.port().unwrap_or(5432))
        .parse()
        .context("the PostgreSQL address (an IP address is needed for the fault proxy)")
}

// ---------------------------------------------------------------------------------
// termination-during-traffic

#[derive(Debug, Clone, Serialize)]
struct TerminationRun {
    manifests: String,
    pre_stop_s: f64,
    grace_s: f64,
    load: Load,
    routed: Routed,
    /// The order API pods the rollout terminated: exit code, SIGKILLed at the grace period.
    terminated: Vec<(i32, bool)>,
    /// The payment consumers the rollout terminated (base run only).
    consumers_terminated: Vec<(i32, bool)>,
    /// Members of the payment group just after the rollout (as many as pods: the old
    /// ones left; more: they are waited out until the session times out).
    group_members_after: Option<usize>,
    payment_pods: usize,
    /// The payment group's lag once the load was over and drained.
    payment_lag_after: Option<i64>,
}

/// A rolling restart of the order API under load, with the base's `preStop` and grace
/// period and without; in the base run the payment consumers are rolled too.
pub async fn termination_during_traffic(
    args: &RehearseArgs,
    cluster: &Cluster,
) -> anyhow::Result<Report> {
    let rate = args.rate.unwrap_or(50.0);
    let duration = args.duration.unwrap_or(Duration::from_secs(45));
    let mut runs = Vec::new();
    for overlay in [None, Scenario::TerminationDuringTraffic.overlay()] {
        cluster.variant(label(overlay))?;
        let objects = objects(overlay)?;
        let name = |d: &str| format!("{d}-{}", label(overlay));
        let relay = cluster.deploy(Template::of(&objects, "relay")?, &name("relay"), 1)?;
        let payment = cluster.deploy(Template::of(&objects, "payment")?, &name("payment"), 2)?;
        let order_template = Template::of(&objects, "order")?;
        let (pre_stop, grace) = (order_template.pre_stop, order_template.grace);
        let order = cluster.deploy(order_template, &name("order"), 2)?;
        for deployment in [&relay, &payment, &order] {
            deployment
                .wait_ready(deployment.pods().len(), READY_LIMIT)
                .await?;
        }
        let service = Service::start(order.clone(), "http", args.endpoint_lag).await?;
        service.wait_endpoints(2, READY_LIMIT).await?;
        eprintln!(
            "rehearsal: {} manifests: {rate} orders/s for {duration:?}, rolling restarts…",
            label(overlay)
        );
        let traffic = tokio::spawn(load(service.addr(), rate, duration));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let old_orders = order.pods();
        order.rolling_restart(READY_LIMIT).await?;
        let rolled_payments = overlay.is_none();
        let old_payments = payment.pods();
        if rolled_payments {
            payment.rolling_restart(READY_LIMIT).await?;
        }
        for pod in old_orders.iter().chain(&old_payments) {
            wait_gone(pod).await;
        }
        let group = phase2_events::flow::Topics::new(&cluster.namespace())
            .group(phase2_events::flow::Service::Payment);
        let members = if rolled_payments {
            Some(group_members(&cluster.brokers, &group).await?)
        } else {
            None
        };
        let measured = traffic.await??;
        let lag = if rolled_payments {
            Some(
                GroupLag::new(&cluster.brokers, &group, &cluster.topic("orders"))?
                    .wait_zero(Duration::from_secs(60))
                    .await?,
            )
        } else {
            None
        };
        let ended = |pods: &[Arc<Pod>]| {
            pods.iter()
                .filter_map(|p| p.exits().last().map(|e| (e.code, e.killed_after_grace)))
                .collect::<Vec<_>>()
        };
        runs.push(TerminationRun {
            manifests: label(overlay).to_owned(),
            pre_stop_s: pre_stop.as_secs_f64(),
            grace_s: grace.as_secs_f64(),
            load: measured,
            routed: service.routed(),
            terminated: ended(&old_orders),
            consumers_terminated: if rolled_payments {
                ended(&old_payments)
            } else {
                Vec::new()
            },
            group_members_after: members,
            payment_pods: payment.pods().len(),
            payment_lag_after: lag,
        });
        for deployment in [order, payment, relay] {
            deployment.delete().await;
        }
    }
    let mut table = format!(
        "{rate} orders/s for {duration:?} through the order API's Service (endpoints {:.0} s late), two replicas rolled one by one\n\n\
         | manifests | preStop | grace | failed requests | refused by a closed port | terminated pods: exit code (SIGKILL) |\n\
         |---|---|---|---|---|---|\n",
        args.endpoint_lag.as_secs_f64()
    );
    let exits = |pods: &[(i32, bool)]| {
        pods.iter()
            .map(|(code, killed)| format!("{code}{}", if *killed { " (SIGKILL)" } else { "" }))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for run in &runs {
        table.push_str(&format!(
            "| {} | {:.0} s | {:.0} s | {} of {} ({}) | {} | {} |\n",
            run.manifests,
            run.pre_stop_s,
            run.grace_s,
            run.load.failed + run.load.not_sent,
            run.load.sent + run.load.not_sent,
            errors(&run.load),
            run.routed.refused,
            exits(&run.terminated),
        ));
    }
    let (base, bare) = (&runs[0], &runs[1]);
    table.push_str(&format!(
        "\npayment consumers rolled (base): exits {}; group members just after: {} for {} pods; lag once drained: {}\n",
        exits(&base.consumers_terminated),
        base.group_members_after.map_or("?".to_owned(), |m| m.to_string()),
        base.payment_pods,
        base.payment_lag_after.map_or("?".to_owned(), |l| l.to_string()),
    ));
    let clean = |pods: &[(i32, bool)]| {
        !pods.is_empty() && pods.iter().all(|(code, killed)| *code == 0 && !killed)
    };
    let checks = vec![
        check(
            "base: no request failed during the rollout",
            base.load.failed + base.load.not_sent == 0,
            format!(
                "{} of {} ({})",
                base.load.failed + base.load.not_sent,
                base.load.sent,
                errors(&base.load)
            ),
        ),
        check(
            "base: every terminated pod drained and exited 0 within its grace period",
            clean(&base.terminated) && clean(&base.consumers_terminated),
            format!(
                "order {}; payment {}",
                exits(&base.terminated),
                exits(&base.consumers_terminated)
            ),
        ),
        check(
            "base: the payment group left cleanly (members = pods just after the rollout)",
            base.group_members_after == Some(base.payment_pods),
            format!(
                "{:?} members, {} pods",
                base.group_members_after, base.payment_pods
            ),
        ),
        check(
            "base: every payment offset committed (lag 0 once drained)",
            base.payment_lag_after == Some(0),
            format!("lag {:?}", base.payment_lag_after),
        ),
        check(
            "no preStop: requests failed during the rollout",
            bare.load.failed > 0,
            format!(
                "{} of {} ({}); {} refused by a closed port",
                bare.load.failed,
                bare.load.sent,
                errors(&bare.load),
                bare.routed.refused
            ),
        ),
    ];
    Ok(Report {
        scenario: Scenario::TerminationDuringTraffic,
        table,
        checks,
        figures: serde_json::to_value(&runs)?,
        logs: Default::default(),
    })
}

async fn wait_gone(pod: &Pod) {
    let deadline = Instant::now() + pod.template.grace + Duration::from_secs(10);
    while !pod.is_gone() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The members of consumer group `group`, as the group coordinator sees them now.
async fn group_members(brokers: &str, group: &str) -> anyhow::Result<usize> {
    Ok(group_assignments(brokers, group).await?.len())
}

/// Each member of `group` (its client id) and the partitions it was given.
async fn group_assignments(brokers: &str, group: &str) -> anyhow::Result<Vec<(String, usize)>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let brokers = brokers.to_owned();
    let group = group.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = phase2_events::kafka::client_config(&brokers).create()?;
        let list = consumer.fetch_group_list(Some(&group), Duration::from_secs(5))?;
        Ok(list
            .groups()
            .iter()
            .flat_map(|g| g.members())
            .map(|m| {
                (
                    m.client_id().to_owned(),
                    m.assignment().map_or(0, assigned_partitions),
                )
            })
            .collect())
    })
    .await?
}

/// How many partitions a member's assignment holds (Kafka's consumer protocol:
/// version i16, then per topic a string and an array of i32 partitions).
fn assigned_partitions(bytes: &[u8]) -> usize {
    let mut at = 2; // version
    let mut take = |n: usize| {
        let slice = bytes.get(at..at + n);
        at += n;
        slice
    };
    let int = |s: Option<&[u8]>| s.map(|b| i32::from_be_bytes(b.try_into().unwrap_or([0; 4])));
    let Some(topics) = int(take(4)) else { return 0 };
    let mut partitions = 0;
    for _ in 0..topics.max(0) {
        let Some(len) = take(2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
            return partitions;
        };
        take(len.max(0) as usize);
        let Some(count) = int(take(4)) else {
            return partitions;
        };
        take(4 * count.max(0) as usize);
        partitions += count.max(0) as usize;
    }
    partitions
}

/// A consumer group's lag on one topic, measured from outside the group by one Kafka
/// client kept for the whole run (phase 2's `LagProbe`).
struct GroupLag(Arc<phase2_events::kafka::LagProbe>);

impl GroupLag {
    fn new(brokers: &str, group: &str, topic: &str) -> anyhow::Result<GroupLag> {
        let probe = phase2_events::kafka::LagProbe::new(brokers, group, vec![topic.to_owned()])?;
        Ok(GroupLag(Arc::new(probe)))
    }

    /// Messages published but not yet committed by the group, over every partition.
    async fn now(&self) -> anyhow::Result<i64> {
        let probe = self.0.clone();
        tokio::task::spawn_blocking(move || {
            Ok(probe
                .sample(Duration::from_secs(5))?
                .iter()
                .map(phase2_events::kafka::PartitionLag::lag)
                .sum())
        })
        .await?
    }

    /// The lag, sampled until it is 0 or `limit` passes.
    async fn wait_zero(&self, limit: Duration) -> anyhow::Result<i64> {
        let start = Instant::now();
        loop {
            let lag = self.now().await?;
            if lag == 0 || start.elapsed() > limit {
                return Ok(lag);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

// ---------------------------------------------------------------------------------
// autoscaling

#[derive(Debug, Clone, Serialize)]
struct Tick {
    at_s: f64,
    order_replicas: u32,
    /// `None` on the first pass: no period to measure over yet.
    order_cpu_percent: Option<f64>,
    order_desired: u32,
    payment_replicas: u32,
    payment_lag: i64,
    payment_desired: u32,
}

#[derive(Debug, Clone, Serialize)]
struct AutoscalingRun {
    manifests: String,
    payment_max: u32,
    partitions: u32,
    ticks: Vec<Tick>,
    /// Each payment member and the partitions it holds, at the end.
    members: Vec<(String, usize)>,
    /// CPU each payment pod used while the backlog drained, in cores.
    payment_cpu: Vec<f64>,
    load: Load,
}

/// How often the autoscaler loop looks (the HPA's default sync period).
const SYNC_PERIOD: Duration = Duration::from_secs(15);

/// A backlog builds while the payment consumers are away; the autoscaler loop then
/// computes each Deployment's replicas with the HPA's formula from live figures (the
/// order API's CPU against its request, the payment group's lag against its
/// threshold) and applies them. With `maxReplicaCount` above the partitions, the
/// replicas beyond them hold no partition and sit idle.
pub async fn autoscaling(args: &RehearseArgs, cluster: &Cluster) -> anyhow::Result<Report> {
    let rate = args.rate.unwrap_or(400.0);
    let duration = args.duration.unwrap_or(Duration::from_secs(45));
    let backlog_for = Duration::from_secs(10);
    let mut runs = Vec::new();
    for overlay in [None, Scenario::Autoscaling.overlay()] {
        cluster.variant(label(overlay))?;
        let objects = objects(overlay)?;
        let name = |d: &str| format!("{d}-{}", label(overlay));
        let order_scaler = Scaler::of(&objects, "order")?;
        let payment_scaler = Scaler::of(&objects, "payment")?;
        let Scaler::Lag {
            topic,
            group,
            allow_idle,
            ..
        } = &payment_scaler
        else {
            anyhow::bail!("the payment service is not scaled on lag");
        };
        let allow_idle = *allow_idle;
        let payment_template = Template::of(&objects, "payment")?;
        let partitions: u32 = payment_template
            .env
            .get("TOPIC_PARTITIONS")
            .and_then(|p| p.parse().ok())
            .unwrap_or(3);
        let relay = cluster.deploy(Template::of(&objects, "relay")?, &name("relay"), 1)?;
        let order_template = Template::of(&objects, "order")?;
        let request = order_template.cpu_request_millis as f64 / 1000.0;
        let order = cluster.deploy(
            order_template,
            &name("order"),
            order_scaler.bounds().0 as usize,
        )?;
        // The consumers are away while the backlog builds (scaled to zero).
        let payment = cluster.deploy(payment_template, &name("payment"), 0)?;
        for deployment in [&relay, &order] {
            deployment
                .wait_ready(deployment.pods().len(), READY_LIMIT)
                .await?;
        }
        let service = Service::start(order.clone(), "http", args.endpoint_lag).await?;
        service
            .wait_endpoints(order.pods().len(), READY_LIMIT)
            .await?;
        eprintln!(
            "rehearsal: {} manifests: {rate} orders/s, the payment consumers away for {backlog_for:?}…",
            label(overlay)
        );
        let traffic = tokio::spawn(load(service.addr(), rate, duration));
        let start = Instant::now();
        let group = cluster.namespaced(group);
        let topic = cluster.topic(topic);
        let payment_lag = GroupLag::new(&cluster.brokers, &group, &topic)?;
        let mut ticks = Vec::new();
        let mut cpu_before: BTreeMap<String, u64> = BTreeMap::new();
        let mut last = Instant::now();
        tokio::time::sleep(backlog_for).await;
        let mut payment_cpu_start: BTreeMap<String, u64> = BTreeMap::new();
        while start.elapsed() < duration {
            // The order API's CPU utilisation over the last period, against its request.
            let elapsed = last.elapsed().as_secs_f64();
            last = Instant::now();
            let pods = order.pods();
            let mut utilisation = Vec::new();
            for pod in &pods {
                let used = pod.usage().cpu_usec;
                if let Some(before) = cpu_before.insert(pod.name.clone(), used) {
                    utilisation.push((used - before) as f64 / 1e6 / elapsed / request * 100.0);
                }
            }
            let cpu = if utilisation.is_empty() {
                0.0
            } else {
                utilisation.iter().sum::<f64>() / utilisation.len() as f64
            };
            let lag = payment_lag.now().await?;
            let order_now = pods.len() as u32;
            let payment_now = payment.pods().len() as u32;
            // No figure for a pod yet: the HPA leaves the count alone.
            let order_desired = if utilisation.is_empty() {
                order_now
            } else {
                order_scaler.desired(order_now, cpu)
            };
            let mut payment_desired = payment_scaler.desired(payment_now, lag as f64);
            if !allow_idle {
                // KEDA's own cap (`allowIdleConsumers: "false"`).
                payment_desired = payment_desired.min(partitions);
            }
            ticks.push(Tick {
                at_s: start.elapsed().as_secs_f64(),
                order_replicas: order_now,
                order_cpu_percent: (!utilisation.is_empty()).then_some(cpu),
                order_desired,
                payment_replicas: payment_now,
                payment_lag: lag,
                payment_desired,
            });
            eprintln!(
                "rehearsal: order {order_now} pods at {cpu:.0} % CPU → {order_desired}; payment {payment_now} pods, lag {lag} → {payment_desired}"
            );
            // Up only: scaling down waits out a stabilisation window (5 minutes for an
            // HPA, cooldownPeriod for KEDA), longer than this run.
            if order_desired > order_now {
                order.scale(order_desired as usize)?;
            }
            if payment_desired > payment_now {
                payment.scale(payment_desired as usize)?;
                for pod in payment.pods() {
                    payment_cpu_start
                        .entry(pod.name.clone())
                        .or_insert_with(|| pod.usage().cpu_usec);
                }
            }
            tokio::time::sleep(SYNC_PERIOD.min(duration.saturating_sub(start.elapsed()))).await;
        }
        let measured = traffic.await??;
        let _ = payment
            .wait_ready(payment.pods().len(), Duration::from_secs(30))
            .await;
        let lag = payment_lag.wait_zero(Duration::from_secs(60)).await?;
        let members = group_assignments(&cluster.brokers, &group).await?;
        let window = start.elapsed().as_secs_f64();
        let payment_cpu = payment
            .pods()
            .iter()
            .map(|p| {
                let from = payment_cpu_start.get(&p.name).copied().unwrap_or(0);
                (p.usage().cpu_usec - from) as f64 / 1e6 / window
            })
            .collect();
        eprintln!("rehearsal: payment lag once drained: {lag}");
        runs.push(AutoscalingRun {
            manifests: label(overlay).to_owned(),
            payment_max: payment_scaler.bounds().1,
            partitions,
            ticks,
            members,
            payment_cpu,
            load: measured,
        });
        for deployment in [order, payment, relay] {
            deployment.delete().await;
        }
    }
    let mut table = format!(
        "{rate} orders/s for {duration:?}; the payment consumers away for the first {backlog_for:?}; \
         an autoscaler pass every {:.0} s (the HPA's formula: ceil(replicas × CPU% / 70 %) for the order API, \
         ceil(lag / 100) for the payment consumers, within min and max; within 10 % of the target nothing changes)\n\
         (the lag tops out at phase 2's flow window, FLOW_WINDOW = 512 orders under way: the rest of the backlog \
         waits in the order outbox, where no lag-based autoscaler sees it)\n",
        SYNC_PERIOD.as_secs_f64()
    );
    for run in &runs {
        table.push_str(&format!(
            "\n{} manifests (payment maxReplicaCount {}, {} partitions)\n\n\
             | at | order pods | order CPU / request | → order | payment pods | payment lag | → payment |\n\
             |---|---|---|---|---|---|---|\n",
            run.manifests, run.payment_max, run.partitions
        ));
        for t in &run.ticks {
            table.push_str(&format!(
                "| {:.0} s | {} | {} | {} | {} | {} | {} |\n",
                t.at_s,
                t.order_replicas,
                t.order_cpu_percent
                    .map_or("—".to_owned(), |c| format!("{c:.0} %")),
                t.order_desired,
                t.payment_replicas,
                t.payment_lag,
                t.payment_desired
            ));
        }
        let list = |items: Vec<String>| items.join(", ");
        table.push_str(&format!(
            "\npayment group members: {} (partitions each: {}); idle members: {}\n\
             payment pods' CPU, each averaged over the run: {} cores\n",
            run.members.len(),
            list(run.members.iter().map(|(_, p)| p.to_string()).collect()),
            run.members.iter().filter(|(_, p)| *p == 0).count(),
            list(run.payment_cpu.iter().map(|c| format!("{c:.3}")).collect()),
        ));
    }
    let (base, over) = (&runs[0], &runs[1]);
    let idle = |run: &AutoscalingRun| run.members.iter().filter(|(_, p)| *p == 0).count();
    let most = |run: &AutoscalingRun| {
        run.ticks
            .iter()
            .map(|t| t.payment_desired)
            .max()
            .unwrap_or(0)
    };
    let checks = vec![
        check(
            "the lag scaled the payment consumers up",
            most(base) > 1 && most(over) > 1,
            format!("base to {}, over-partitions to {}", most(base), most(over)),
        ),
        check(
            "base: never beyond the partitions, no member idle",
            most(base) <= base.partitions && idle(base) == 0 && !base.members.is_empty(),
            format!(
                "{} members, {} idle, {} partitions",
                base.members.len(),
                idle(base),
                base.partitions
            ),
        ),
        check(
            "over the partitions: the members beyond them hold nothing",
            most(over) > over.partitions && idle(over) as u32 == most(over) - over.partitions,
            format!(
                "{} members, {} idle, {} partitions",
                over.members.len(),
                idle(over),
                over.partitions
            ),
        ),
    ];
    Ok(Report {
        scenario: Scenario::Autoscaling,
        table,
        checks,
        figures: serde_json::to_value(&runs)?,
        logs: Default::default(),
    })
}

// ---------------------------------------------------------------------------------
// pod-killer

#[derive(Debug, Clone, Serialize)]
struct Round {
    deployment: String,
    pod: String,
    recovered_s: Option<f64>,
}

/// The recovery target (the brief's reference pipeline fails above 30 s).
const RECOVERY_TARGET: Duration = Duration::from_secs(10);

/// Kills a random replica of the order API or the payment consumers, again and
/// again under load, and measures how long its Deployment takes to have every
/// replica ready again.
pub async fn pod_killer(args: &RehearseArgs, cluster: &Cluster) -> anyhow::Result<Report> {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    let rate = args.rate.unwrap_or(50.0);
    let objects = objects(None)?;
    let relay = cluster.deploy(Template::of(&objects, "relay")?, "relay", 1)?;
    let mut targets: Vec<Arc<Deployment>> = Vec::new();
    for name in ["order", "payment"] {
        let replicas = Scaler::of(&objects, name)?.bounds().0.max(1) as usize;
        targets.push(cluster.deploy(Template::of(&objects, name)?, name, replicas)?);
    }
    for deployment in targets.iter().chain([&relay]) {
        deployment
            .wait_ready(deployment.pods().len(), READY_LIMIT)
            .await?;
    }
    let service = Service::start(targets[0].clone(), "http", args.endpoint_lag).await?;
    service
        .wait_endpoints(targets[0].pods().len(), READY_LIMIT)
        .await?;
    let duration = args
        .duration
        .unwrap_or(Duration::from_secs(u64::from(args.rounds) * 15 + 5));
    let traffic = tokio::spawn(load(service.addr(), rate, duration));
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut rounds = Vec::new();
    for _ in 0..args.rounds {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let deployment = targets[rng.random_range(0..targets.len())].clone();
        let pods = deployment.pods();
        let victim = pods[rng.random_range(0..pods.len())].clone();
        let wanted = pods.len();
        let killed = Instant::now();
        eprintln!(
            "rehearsal: killing {} (SIGKILL, like `kubectl delete pod --grace-period=0 --force`)",
            victim.name
        );
        deployment.replace(&victim, true).await?;
        let mut recovered = None;
        while killed.elapsed() < RECOVERY_TARGET * 3 {
            if deployment.ready() >= wanted {
                recovered = Some(killed.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        rounds.push(Round {
            deployment: deployment.name().to_owned(),
            pod: victim.name.clone(),
            recovered_s: recovered,
        });
    }
    let measured = traffic.await??;
    let mut table = format!(
        "{rate} orders/s through the order API's Service; {} rounds of SIGKILL to a random pod of order (×{}) or payment (×{})\n\n\
         | round | pod killed | all replicas ready again after |\n|---|---|---|\n",
        args.rounds,
        targets[0].pods().len(),
        targets[1].pods().len()
    );
    for (i, round) in rounds.iter().enumerate() {
        table.push_str(&format!(
            "| {} | {} | {} |\n",
            i + 1,
            round.pod,
            round
                .recovered_s
                .map_or("not within 30 s".to_owned(), |s| format!("{s:.1} s"))
        ));
    }
    table.push_str(&format!(
        "\nrequests: {} of {} failed ({}) — those in flight on a killed pod, and those routed to it before the endpoints caught up\n",
        measured.failed + measured.not_sent,
        measured.sent + measured.not_sent,
        errors(&measured)
    ));
    let worst = rounds
        .iter()
        .map(|r| r.recovered_s.unwrap_or(f64::INFINITY))
        .fold(0.0, f64::max);
    let checks = vec![
        check(
            format!("every recovery within {} s", RECOVERY_TARGET.as_secs()),
            worst <= RECOVERY_TARGET.as_secs_f64(),
            format!("worst {worst:.1} s over {} rounds", rounds.len()),
        ),
        check(
            "the load was served between the kills",
            measured.ok > measured.sent / 2,
            format!("{} of {} answered", measured.ok, measured.sent),
        ),
    ];
    Ok(Report {
        scenario: Scenario::PodKiller,
        table,
        checks,
        figures: serde_json::json!({ "rounds": rounds, "load": measured, "routed": service.routed() }),
        logs: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_sorted_by_kind() {
        assert_eq!(error_kind("503: {\"title\":\"draining\"}"), "503");
        assert_eq!(error_kind("no answer within 10s"), "timeout");
        assert_eq!(
            error_kind(
                "error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)"
            ),
            "connection refused"
        );
        assert_eq!(
            error_kind("connection closed before message completed"),
            "connection closed"
        );
    }

    #[test]
    fn an_assignment_is_counted_by_its_partitions() {
        // version 0; one topic "orders" with partitions 0 and 2; no user data.
        let mut bytes = vec![0, 0, 0, 0, 0, 1, 0, 6];
        bytes.extend_from_slice(b"orders");
        bytes.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]);
        assert_eq!(assigned_partitions(&bytes), 2);
        // No topic at all: an idle member.
        assert_eq!(assigned_partitions(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 0);
        assert_eq!(assigned_partitions(&[]), 0);
    }
}
