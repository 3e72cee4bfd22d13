//! Running the real `phase1-monolith` binary, for scenarios about processes (kill -9,
//! SIGTERM) that an in-process app cannot show.

use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Debug)]
pub struct Process {
    pub child: Child,
    pub url: String,
}

/// Starts the phase-1 binary with `args` and waits for its "listening" log line.
pub async fn start<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_phase1-monolith"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start phase1-monolith");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(json) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if json["message"] == "listening" {
                return json["addr"].as_str().unwrap().to_owned();
            }
            if json["level"] == "ERROR" {
                panic!("phase1-monolith failed to start: {line}");
            }
        }
        panic!("phase1-monolith exited before listening");
    })
    .await
    .expect("phase1-monolith did not start within 30 s");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Process {
        child,
        url: format!("http://{addr}"),
    }
}

impl Process {
    /// Sends SIGTERM, as `kill PID`, a container runtime or Ctrl-C would.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("process is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {pid}");
    }
}
