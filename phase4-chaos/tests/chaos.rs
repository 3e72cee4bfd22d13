//! Every scenario in both directions, at a small rate: with its defence the verdict
//! is a pass; with `--no-defence` the same faults fail it, and the failing rule names
//! what went wrong (orders left behind, a retry storm, orders a node took with it).
//! Each run starts its own platform (nine processes, this crate's binary) on fresh
//! databases and topics, with every port shifted so that it runs beside anything.
//!
//! Test-sized: 100 requests/s for 30 s; the gateway's p99 SLO is loosened to 1 s (a
//! debug build, beside the rest of the test suite on two cores) and admission
//! control's target to 5 s — the scenarios are about faults, not about latency;
//! `cargo xtask chaos` runs them at the brief's SLO on a release build.

use phase4_chaos::chaos::verdict::Judged;
use phase4_chaos::chaos::{Outcome, ScenarioArgs};
use std::path::PathBuf;

async fn kill_service(offset: u16, extra: &[&str]) -> Outcome {
    scenario("kill-service", offset, extra).await
}

async fn scenario(name: &str, offset: u16, extra: &[&str]) -> Outcome {
    let runs = std::env::temp_dir().join(format!(
        "ferriseats-chaos-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let offset = offset.to_string();
    let runs_arg = runs.display().to_string();
    // 30 s unless the test says otherwise.
    let duration = if extra.contains(&"--duration") {
        &[][..]
    } else {
        &["--duration", "30s"][..]
    };
    let mut argv = vec![name, "--rate", "100"];
    argv.extend_from_slice(duration);
    argv.extend_from_slice(&[
        "--warmup",
        "5s",
        "--seed",
        "7",
        "--slo-p99",
        "1s",
        "--port-offset",
        &offset,
        "--runs",
        &runs_arg,
    ]);
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&["--", "--order-target", "5s"]);
    let mut args: ScenarioArgs = phase4_chaos::parse_flags(&argv).unwrap();
    args.binary = Some(PathBuf::from(env!("CARGO_BIN_EXE_phase4-chaos")));
    let scenario = args.scenario.expect("named");
    phase4_chaos::chaos::run(&args, scenario).await.unwrap_or_else(|err| {
        panic!("the scenario could not run (PostgreSQL, Kafka and Redis from `cargo xtask up`?): {err:#}")
    })
}

fn rule<'a>(outcome: &'a Outcome, name: &str) -> &'a phase4_chaos::chaos::verdict::Rule {
    outcome
        .verdict
        .rules
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no rule {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_each_service_in_turn_loses_nothing_and_it_recovers_without_a_human() {
    let outcome = kill_service(11_000, &["--drain", "60s"]).await;
    let report = outcome.report();
    assert_eq!(outcome.verdict.judged, Judged::Pass, "{report}");
    assert!(outcome.verdict.accepted > 100, "{report}");
    assert_eq!(outcome.verdict.lost, 0);
    assert_eq!(
        outcome.verdict.recoveries.len(),
        3,
        "payment, order-1, relay"
    );
    for name in [
        "config.json",
        "verdict.json",
        "report.md",
        "load.json",
        "placements.jsonl",
        "run.svg",
    ] {
        assert!(
            outcome.folder.join(name).is_file(),
            "{name} in {}",
            outcome.folder.display()
        );
    }
    let picture = std::fs::read_to_string(outcome.folder.join("run.svg")).unwrap();
    assert!(
        picture.starts_with("<svg") && picture.contains("2xx"),
        "an SVG with its legend"
    );
    let verdict: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(outcome.folder.join("verdict.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(verdict["verdict"]["judged"], "pass");
    assert_eq!(verdict["config"]["seed"], 7);
    assert_eq!(outcome.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_restarts_the_same_kills_leave_accepted_orders_behind_and_the_verdict_says_so() {
    let outcome = kill_service(12_000, &["--drain", "10s", "--no-defence"]).await;
    let report = outcome.report();
    assert_eq!(outcome.verdict.judged, Judged::Fail, "{report}");
    assert!(outcome.verdict.lost > 0, "{report}");
    let lost = rule(&outcome, "nothing lost");
    assert!(!lost.pass);
    assert!(
        lost.detail.contains("accepted orders are not final"),
        "{}",
        lost.detail
    );
    assert!(
        !rule(&outcome, "recovered without a human").pass,
        "{report}"
    );
    assert!(rule(&outcome, "steady state before").pass, "{report}");
    assert!(report.contains("switched off for this run"), "{report}");
    assert_eq!(outcome.exit_code(), 1);
}

/// Runs `name` with its defence, then without: a pass, then a fail whose rule
/// `broken` says `says`. Returns both reports (for the panic messages).
async fn both_ways(name: &str, offset: u16, extra: &[&str], broken: &str, says: &str) {
    let with = scenario(name, offset, &[&["--drain", "60s"], extra].concat()).await;
    let report = with.report();
    assert_eq!(with.verdict.judged, Judged::Pass, "{report}");
    assert_eq!(with.verdict.lost, 0, "{report}");
    assert_eq!(with.verdict.duplicates, 0, "{report}");

    let without = scenario(
        name,
        offset,
        &[&["--drain", "20s", "--no-defence"], extra].concat(),
    )
    .await;
    let report = without.report();
    assert_eq!(without.verdict.judged, Judged::Fail, "{report}");
    assert!(rule(&without, "steady state before").pass, "{report}");
    let failed = rule(&without, broken);
    assert!(
        !failed.pass,
        "{broken} should fail without the defence: {report}"
    );
    assert!(failed.detail.contains(says), "{}", failed.detail);
    assert!(report.contains("switched off for this run"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_broker_node_of_three_is_absorbed_by_replication_and_not_without_it() {
    // A node of three restarting beside the rest on two cores takes 10–20 s: the run
    // is long enough to see it back and the platform after it. Failing over takes
    // the controller's 4 s session and the clients' retries; without replication the
    // orders of the node's partitions wait for the node itself.
    both_ways(
        "kill-broker-node",
        13_000,
        &["--duration", "60s", "--recovery-target", "12s"],
        "absorbed",
        "unfinished",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_nothing_through_the_outbox_and_loses_orders_without_it() {
    // The broker's JVM takes 10–15 s to come back on a busy machine: 60 s leaves the
    // platform time to show it recovered.
    both_ways(
        "broker-restart",
        14_000,
        &["--duration", "60s"],
        "nothing lost",
        "(placed)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_within_the_timeouts_costs_no_retries_and_a_timeout_too_short_storms() {
    // A provider ten times slower leaves a backlog of payments to drain once it is
    // fast again: in a debug build beside the suite that takes 1–11 s (at full rate,
    // release, `cargo xtask chaos` holds it to 10 s). The test is about the retries,
    // but the run must outlast the second fault by the recovery target: at the
    // default 30 s the inventory's slow database healed at 19.5 s, and a CI machine
    // still shedding orders at 26 s was judged "never recovered". 50 s leaves 20 s.
    both_ways(
        "latency",
        15_000,
        &["--duration", "50s", "--recovery-target", "15s"],
        "retries within budget",
        "provider calls for",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_is_waited_out_by_pausing_and_loses_orders_when_consumers_retry_instead() {
    // Two faults in turn: 60 s leaves room to recover after the second, whose 12 s
    // outlast the retry topic's three retries.
    both_ways(
        "partition",
        16_000,
        &["--duration", "60s"],
        "nothing lost",
        "accepted orders are not final",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_crash_loses_nothing_and_a_relay_left_dead_by_it_strands_every_later_order() {
    both_ways(
        "db-restart",
        17_000,
        &[],
        "nothing lost",
        "accepted orders are not final",
    )
    .await;
}
