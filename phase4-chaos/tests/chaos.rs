//! The kill-service scenario in both directions, at a small rate: with the supervisor
//! restarting what dies the verdict is a pass (nothing lost, recovered, no cascade);
//! with `--no-restart` the same faults fail it, naming the orders left behind. Each
//! run starts its own platform (nine processes, this crate's binary) on fresh
//! databases and topics, with every port shifted so that it runs beside anything.
//!
//! Test-sized: 100 requests/s for 30 s; the gateway's p99 SLO is loosened to 1 s (a
//! debug build, beside the rest of the test suite on two cores) and admission
//! control's target to 5 s — the scenario is about killed processes, not about
//! latency; `cargo xtask chaos` runs it at the brief's SLO on a release build.

use phase4_chaos::chaos::verdict::Judged;
use phase4_chaos::chaos::{Outcome, ScenarioArgs};
use std::path::PathBuf;

async fn kill_service(offset: u16, extra: &[&str]) -> Outcome {
    let runs = std::env::temp_dir().join(format!(
        "ferriseats-chaos-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let offset = offset.to_string();
    let runs_arg = runs.display().to_string();
    let mut argv = vec![
        "kill-service",
        "--rate",
        "100",
        "--duration",
        "30s",
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
    ];
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
    let outcome = kill_service(12_000, &["--drain", "10s", "--no-restart"]).await;
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
