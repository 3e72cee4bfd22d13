//! The same overload twice — with the gateway's load shedding on, then off — against a
//! replica of phase 2's real order API whose database is slow (5 ms each way through
//! the fault proxy) and whose pool is small (2 connections): it can finish a few dozen
//! requests a second. What a learner should see: with shedding the excess is refused
//! at once and reads keep being answered; without it every request queues, reads
//! included, and answers arrive too late to be of use.

mod support;

use common::shutdown::CancellationToken;
use phase2_events::fault_proxy::FaultProxy;
use phase4_chaos::load::mix::Endpoint;
use phase4_chaos::load::run::{self, LoadReport};
use std::net::SocketAddr;
use std::time::Duration;
use support::{Door, load_args, order_api};

async fn overload(upstream: &str, gateway_args: &[&str]) -> LoadReport {
    let mut args = vec!["--no-rate-limit", "--no-breaker"];
    args.extend_from_slice(gateway_args);
    let door = Door::open(upstream, &args).await;
    let load = load_args(
        &door.url,
        &[
            "--mix",
            "place=3,status=1",
            "--rate",
            "120",
            "--duration",
            "5s",
            "--timeout",
            "2s",
            "--seed",
            "11",
            "--customers",
            "50",
        ],
    );
    let report = run::run(&load).await.unwrap();
    door.close().await;
    report
}

fn status(report: &LoadReport) -> (u64, u64, f64) {
    let polls = report
        .endpoints
        .iter()
        .find(|e| e.endpoint == Endpoint::Status)
        .expect("status polls were sent");
    (polls.counts.sent, polls.counts.ok, polls.latency.p99_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shedding_keeps_reads_answered_where_queueing_lets_everything_time_out() {
    let system = order_api().await;
    // A slow replica: its own pool of 2 connections to PostgreSQL through a 5 ms proxy.
    let postgres: SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], 0)), postgres)
        .await
        .unwrap();
    proxy.faults().set_latency(Duration::from_millis(5));
    let mut settings = system.settings.clone();
    settings.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.db_max_connections = 2;
    settings.order_database_url = settings
        .order_database_url
        .replace("127.0.0.1:5432", &proxy.addr().to_string());
    assert!(
        settings
            .order_database_url
            .contains(&proxy.addr().to_string())
    );
    let replica = phase2_events::services::order::OrderService::build(&settings)
        .await
        .unwrap();
    let upstream = format!("http://{}", replica.addr());
    let replica_stop = CancellationToken::new();
    let replica_task = tokio::spawn(replica.run(replica_stop.clone()));

    let shedding = overload(&upstream, &["--max-in-flight", "16"]).await;
    let queueing = overload(&upstream, &["--no-shedding"]).await;
    for (name, report) in [("shedding", &shedding), ("queueing", &queueing)] {
        let (sent, ok, p99) = status(report);
        eprintln!(
            "{name}: goodput {:.1}/s, refused {}, failed {}, status polls {ok}/{sent} ok, p99 {p99:.0} ms",
            report.goodput_per_s, report.totals.refused, report.totals.failed
        );
    }

    // With shedding: the excess is refused at once, nothing times out, reads answered.
    let (sent, ok, p99) = status(&shedding);
    assert!(
        shedding.totals.refused > 0,
        "the overload was real: some writes were shed"
    );
    assert_eq!(shedding.totals.failed, 0, "{:?}", shedding.first_errors);
    assert!(
        ok * 4 >= sent * 3,
        "≥ 75 % of status polls answered 2xx (the rest a quick 503): {ok}/{sent}"
    );
    assert!(
        p99 < 1_500.0,
        "reads are answered well inside the 2 s clients wait: p99 {p99} ms"
    );

    // Without: requests queue behind each other until clients give up, reads too.
    let (sent, ok, p99) = status(&queueing);
    assert!(
        queueing.totals.failed > queueing.totals.sent / 10,
        "more than 10 % time out without shedding: {} of {}",
        queueing.totals.failed,
        queueing.totals.sent
    );
    assert!(
        ok * 2 < sent || p99 >= 1_000.0,
        "reads suffer: {ok}/{sent}, p99 {p99} ms"
    );
    assert!(
        queueing.goodput_per_s < shedding.goodput_per_s,
        "queueing finishes less: {:.1}/s against {:.1}/s",
        queueing.goodput_per_s,
        shedding.goodput_per_s
    );

    replica_stop.cancel();
    replica_task.await.unwrap().unwrap();
    proxy.stop().await;
    system.stop().await;
}
