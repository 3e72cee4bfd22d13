//! The page to watch (`GET /` on the order API, `static/index.html`), driven by a
//! real browser: headless Chromium (Debian's package) under Playwright
//! (playwright-core from the npm registry) runs `tests/page/watch-an-order.cjs`,
//! which orders two items and waits until the order's card says `delivered`.
//!
//! [`watch_an_order`] starts the order API and the notification service as the
//! processes a learner starts (`<binary> order`, `<binary> notification`, phase 2's or
//! phase 3's), on ports of their own, beside a [`TestSystem`] running the other
//! services; it checks what the page showed against the state machine and the
//! database, and returns it. Needs `CHROMIUM` and `PLAYWRIGHT_NODE_PATH`, which
//! `cargo xtask test` sets after installing both.

use super::TestSystem;
use common::domain::OrderStatus;
use common::local_kafka::cluster::free_port;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// What the browser saw on the order's card.
#[derive(Debug, serde::Deserialize)]
pub struct Seen {
    pub order_id: String,
    pub request_id: String,
    pub trace_id: String,
    pub statuses: Vec<String>,
    pub console_errors: Vec<String>,
}

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run the tests with `cargo xtask test` (it installs Chromium \
             from Debian's packages and playwright-core from the npm registry), or set \
             CHROMIUM=/usr/bin/chromium and PLAYWRIGHT_NODE_PATH=<dir>/node_modules"
        )
    })
}

fn spawn(
    binary: &Path,
    system: &TestSystem,
    service: &str,
    env: &[(&str, String)],
    log: &Path,
) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(binary)
        .arg(service)
        .envs(system.env())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|err| panic!("spawning `{} {service}`: {err}", binary.display()))
}

async fn wait_until_up(url: &str, what: &str) {
    let started = Instant::now();
    loop {
        if let Ok(response) = reqwest::get(url).await
            && response.status().is_success()
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not come up at {url}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Serves the page from `binary`'s order API, orders through it in a browser, and
/// checks that the statuses it showed were the state machine's, in its order, from
/// `placed` (the 202) to `delivered`, each pushed live (a page that fell back to
/// polling says so, which fails here), without a console error, and that the
/// database agrees.
pub async fn watch_an_order(binary: &Path, system: &TestSystem) -> Seen {
    let (chromium, node_path) = (required("CHROMIUM"), required("PLAYWRIGHT_NODE_PATH"));
    let (order_port, live_port) = (free_port().unwrap(), free_port().unwrap());
    let env = [
        ("LISTEN_ADDR", format!("127.0.0.1:{order_port}")),
        ("NOTIFICATION_ADDR", format!("127.0.0.1:{live_port}")),
        // Phase 3's ops ports (ignored by phase 2).
        ("OPS_ADDR", format!("127.0.0.1:{}", free_port().unwrap())),
    ];
    let logs = std::env::temp_dir().join(format!("ferriseats-page-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&logs).unwrap();
    let mut order = spawn(binary, system, "order", &env, &logs.join("order.log"));
    let env = [
        env[0].clone(),
        env[1].clone(),
        ("OPS_ADDR", format!("127.0.0.1:{}", free_port().unwrap())),
    ];
    let mut notification = spawn(
        binary,
        system,
        "notification",
        &env,
        &logs.join("notification.log"),
    );
    let base = format!("http://127.0.0.1:{order_port}");
    wait_until_up(&format!("{base}/ready"), "the order API").await;
    wait_until_up(
        &format!("http://127.0.0.1:{live_port}/health"),
        "the notification service",
    )
    .await;

    // The page is served as written, with the notification service's port filled in.
    let html = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(html.headers()["content-type"], "text/html; charset=utf-8");
    let html = html.text().await.unwrap();
    assert!(html.contains(&format!(r#"<meta name="live-port" content="{live_port}">"#)));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/page/watch-an-order.cjs");
    let output = Command::new("node")
        .arg(&script)
        .arg(format!("{base}/"))
        .env("CHROMIUM", chromium)
        .env("NODE_PATH", node_path)
        .output()
        .await
        .expect("node runs (Node.js is needed for the browser test)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser did not see the order delivered:\n{stdout}\n{}\n(service logs in {})",
        String::from_utf8_lossy(&output.stderr),
        logs.display()
    );
    let seen: Seen = serde_json::from_str(stdout.trim()).expect("one JSON line from the script");
    println!("the browser saw: {seen:?}");

    let statuses: Vec<OrderStatus> = seen
        .statuses
        .iter()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("not a status: {s:?} in {seen:?}"))
        })
        .collect();
    assert_eq!(statuses.first(), Some(&OrderStatus::Placed), "{seen:?}");
    assert_eq!(statuses.last(), Some(&OrderStatus::Delivered), "{seen:?}");
    let rank = |s: &OrderStatus| OrderStatus::ALL.iter().position(|x| x == s);
    assert!(
        statuses.windows(2).all(|w| rank(&w[0]) < rank(&w[1])),
        "statuses out of order: {seen:?}"
    );
    assert!(seen.console_errors.is_empty(), "{seen:?}");
    assert!(uuid::Uuid::parse_str(&seen.request_id).is_ok(), "{seen:?}");

    let stored: serde_json::Value = reqwest::get(format!("{base}/orders/{}", seen.order_id))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored["status"], "delivered");

    order.start_kill().unwrap();
    notification.start_kill().unwrap();
    let _ = (order.wait().await, notification.wait().await);
    seen
}
