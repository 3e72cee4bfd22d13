//! The supervisor keeps real processes running: SIGKILL one and it is back, with a
//! new pid, counted in `/metrics`; with `--no-restart` it stays down. The processes
//! here are `sleep 300`, so that the test is about the supervisor and nothing else.

use harness::Running;
use phase4_chaos::supervisor::{
    ProcessStatus, Program, Supervisor, SupervisorSettings, kill_process, processes,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod harness {
    //! A supervisor started on an ephemeral ops port, stopped at the end.
    use super::*;
    use common::shutdown::CancellationToken;

    pub struct Running {
        pub ops: SocketAddr,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    impl Running {
        pub async fn start(flags: &[&str]) -> Running {
            let mut settings: SupervisorSettings = phase4_chaos::parse_flags(flags).unwrap();
            settings.logs = std::env::temp_dir().join(format!(
                "ferriseats-supervisor-{}",
                uuid::Uuid::now_v7().simple()
            ));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let ops = listener.local_addr().unwrap();
            let shutdown = CancellationToken::new();
            let supervisor = Supervisor::new(settings, PathBuf::from("sleep"));
            let programs = vec![
                Program::new("sleeper", &["300"], None),
                Program::new("bystander", &["300"], None),
            ];
            let task = tokio::spawn(supervisor.serve(listener, programs, shutdown.clone()));
            let stop = Running {
                ops,
                shutdown,
                task,
            };
            stop.until(|all| all.len() == 2 && all.iter().all(|p| p.pid.is_some()))
                .await;
            stop
        }

        /// Waits (at most 5 s) until `/processes` satisfies `done`; returns it.
        pub async fn until(&self, done: impl Fn(&[ProcessStatus]) -> bool) -> Vec<ProcessStatus> {
            let mut last = Vec::new();
            for _ in 0..100 {
                if let Ok(all) = processes(self.ops).await {
                    if done(&all) {
                        return all;
                    }
                    last = all;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the supervisor's /processes never got there: {last:?}");
        }

        pub async fn stop(self) {
            self.shutdown.cancel();
            self.task.await.unwrap().unwrap();
        }
    }
}

fn named<'a>(all: &'a [ProcessStatus], name: &str) -> &'a ProcessStatus {
    all.iter().find(|p| p.name == name).unwrap()
}

#[tokio::test]
async fn a_killed_process_is_started_again_and_the_others_are_left_alone() {
    let supervisor = Running::start(&["--restart-base", "100ms"]).await;
    let before = processes(supervisor.ops).await.unwrap();
    let killed = kill_process(supervisor.ops, "sleeper").await.unwrap();
    assert_eq!(Some(killed), named(&before, "sleeper").pid);

    let after = supervisor
        .until(|all| {
            let sleeper = named(all, "sleeper");
            sleeper.restarts == 1 && sleeper.pid.is_some()
        })
        .await;
    let sleeper = named(&after, "sleeper");
    assert_ne!(sleeper.pid, Some(killed), "a new process");
    assert_eq!(
        sleeper.last_exit.as_deref(),
        Some("signal: 9 (SIGKILL)"),
        "{sleeper:?}"
    );
    let bystander = named(&after, "bystander");
    assert_eq!(bystander.restarts, 0);
    assert_eq!(bystander.pid, named(&before, "bystander").pid, "untouched");

    let metrics = reqwest::get(format!("http://{}/metrics", supervisor.ops))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("supervisor_restarts_total{process=\"sleeper\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("supervisor_up{process=\"sleeper\"} 1"),
        "{metrics}"
    );
    supervisor.stop().await;
}

#[tokio::test]
async fn without_restarts_a_killed_process_stays_down() {
    let supervisor = Running::start(&["--no-restart"]).await;
    let killed = kill_process(supervisor.ops, "sleeper").await.unwrap();
    let after = supervisor
        .until(|all| named(all, "sleeper").pid.is_none())
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = processes(supervisor.ops).await.unwrap();
    assert_eq!(named(&later, "sleeper").pid, None, "still down: {after:?}");
    assert_eq!(named(&later, "sleeper").restarts, 0);
    assert!(named(&later, "bystander").pid.is_some());
    assert!(
        kill_process(supervisor.ops, "sleeper").await.is_err(),
        "down already (pid {killed})"
    );
    supervisor.stop().await;
}
