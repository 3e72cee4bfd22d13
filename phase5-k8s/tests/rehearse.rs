//! The rehearsals, each once, on this machine's PostgreSQL and Kafka (`cargo xtask up`)
//! and Linux cgroups (root). Each scenario runs the base manifests beside the
//! misconfiguration it is about, and its checks look both ways: the base keeps what
//! the misconfiguration breaks (so a check that could not fail would show in one of
//! the two columns). The loads are shorter than the command's defaults and the image's
//! binary is the debug build; `cargo run -p phase5-k8s -- rehearse --all` runs them at
//! full length on a release build.
//!
//! They run one at a time (nextest group `heavy`): each starts a handful of
//! processes and measures latency and CPU throttling.

use phase5_k8s::rehearse::{self, RehearseArgs, Report, Scenario};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The image's binary (`phase4-chaos`), built beside this crate's.
fn image_binary() -> PathBuf {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "-p", "phase4-chaos"])
        .current_dir(common_local::process::workspace_root())
        .status()
        .expect("running cargo build -p phase4-chaos");
    assert!(status.success(), "cargo build -p phase4-chaos failed");
    PathBuf::from(env!("CARGO_BIN_EXE_phase5-k8s")).with_file_name("phase4-chaos")
}

async fn rehearse(scenario: Scenario, change: impl FnOnce(&mut RehearseArgs)) -> Report {
    let mut args = RehearseArgs::new(scenario);
    args.binary = Some(image_binary());
    change(&mut args);
    let report = rehearse::run(&args, scenario)
        .await
        .unwrap_or_else(|err| panic!("rehearsal {}: {err:#}", scenario.name()));
    println!("{}", report.print());
    report
}

fn assert_passed(report: &Report) {
    for check in &report.checks {
        assert!(
            check.passed,
            "{}: {} — {}",
            report.scenario.name(),
            check.what,
            check.figures
        );
    }
    assert!(report.passed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_starved_cpu_limit_throttles_and_users_wait() {
    let report = rehearse(Scenario::CpuStarved, |a| {
        a.duration = Some(Duration::from_secs(10))
    })
    .await;
    assert_passed(&report);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_limit_below_the_need_is_oom_killed_and_restarted() {
    let report = rehearse(Scenario::MemoryTight, |a| {
        a.duration = Some(Duration::from_secs(20))
    })
    .await;
    assert_passed(&report);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_restarts_only_the_pods_whose_liveness_checks_it() {
    let report = rehearse(Scenario::LivenessOnDatabase, |_| {}).await;
    assert_passed(&report);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_fails_requests_only_without_prestop() {
    let report = rehearse(Scenario::TerminationDuringTraffic, |a| {
        a.duration = Some(Duration::from_secs(35));
    })
    .await;
    assert_passed(&report);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_autoscaler_follows_the_lag_and_replicas_beyond_the_partitions_idle() {
    let report = rehearse(Scenario::Autoscaling, |a| {
        a.rate = Some(150.0);
        a.duration = Some(Duration::from_secs(35));
    })
    .await;
    assert_passed(&report);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_pod_is_replaced_and_ready_within_ten_seconds() {
    let report = rehearse(Scenario::PodKiller, |a| a.rounds = 3).await;
    assert_passed(&report);
}
