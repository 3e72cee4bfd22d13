//! The gateway started without Redis, the way a learner meets it: the real binary,
//! `REDIS_URL` pointing at a port where nothing listens. It must fail at once with
//! one line — Redis, the address, `cargo xtask up`, and the flag that runs without
//! it — the last line printed, even with `RUST_BACKTRACE` set. The shared Redis is
//! never touched.

use common::testing::{closed_port, run_to_failure};
use std::process::Command;
use std::time::Duration;

#[test]
fn the_gateway_without_redis_is_one_line_naming_it_and_the_way_out() {
    let port = closed_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_phase4-chaos"));
    command
        .args([
            "gateway",
            "--redis-url",
            &format!("redis://127.0.0.1:{port}"),
        ])
        .args(["--addr", "127.0.0.1:0", "--ops-addr", "127.0.0.1:0"]);
    let (status, stderr, took) = run_to_failure(command, Duration::from_secs(30));
    assert!(!status.success());
    assert_eq!(
        stderr,
        format!(
            "error: cannot reach Redis at 127.0.0.1:{port} (connection refused): start it with \
             `cargo xtask up` (or pass --no-rate-limit to run without rate limits)\n"
        )
    );
    assert!(took < Duration::from_secs(10), "it took {took:?}");
}
