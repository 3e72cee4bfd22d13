//! End to end: the real observed system (`phase3-observability all`, built in this
//! process on fresh databases and a topic namespace of its own, with its own ports),
//! and the real dashboard binary in a tmux pane. An instructor's key switches an
//! incident on; the screen shows it, and so does the ops server. Then the system
//! dies under the dashboard, which keeps running and shows it down.
//!
//! Needs PostgreSQL, Redis and Apache Kafka (`cargo xtask up`), and
//! tmux. A missing one fails the test with the command that provides it.

use phase3_observability::testing::{Options, System};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmux server of this test alone (its own socket), running the dashboard.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn tmux(&self) -> Command {
        let mut command = Command::new(std::env::var("TMUX_BIN").unwrap_or("tmux".into()));
        command.args(["-L", &self.socket]);
        command
    }

    fn start(command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("tui-e2e-{}", std::process::id()),
        };
        let status = tmux
            .tmux()
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "dash",
                "-x",
                "160",
                "-y",
                "50",
            ])
            .arg(command)
            .env_remove("TMUX")
            .status()
            .unwrap_or_else(|err| {
                panic!("tmux is needed for this test: {err} (apt-get install tmux)")
            });
        assert!(status.success(), "tmux new-session");
        tmux
    }

    fn screen(&self) -> String {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-t", "dash"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        let status = self
            .tmux()
            .args(["send-keys", "-t", "dash", keys])
            .status()
            .unwrap();
        assert!(status.success(), "tmux send-keys {keys}");
    }

    fn running(&self) -> bool {
        self.tmux()
            .args(["has-session", "-t", "dash"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Waits until the screen satisfies `check`; panics with the screen after `limit`.
    async fn wait_for(&self, what: &str, limit: Duration, check: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                started.elapsed() < limit,
                "{what}: not on screen after {limit:?}:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").output();
    }
}

/// The screen line of the incident `name` (the incidents panel is on the right).
fn row<'a>(screen: &'a str, name: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.contains(&format!(" {name} ")))
        .unwrap_or("")
}

/// The services panel's row of `target` (the panel is on the left).
fn service<'a>(screen: &'a str, target: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.starts_with(&format!("│{target} ")))
        .map_or("", |l| l.split("││").next().unwrap_or(l))
}

/// p99 of the latency panel's window row ("last 12s  62ms  3.59s  4.72s  75"), in
/// seconds.
fn window_p99(screen: &str) -> Option<f64> {
    let cell = screen
        .lines()
        .flat_map(|l| l.split('│'))
        .find(|cell| cell.starts_with("last "))?;
    let p99 = cell.split_whitespace().nth(4)?;
    match p99.strip_suffix("ms") {
        Some(ms) => ms.parse::<f64>().ok().map(|ms| ms / 1000.0),
        None => p99.strip_suffix('s')?.parse().ok(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_switches_payment_slowdown_on_and_the_dashboard_survives_the_system_dying() {
    let system = System::start(Options {
        provider_latency: "20ms..60ms".parse().unwrap(),
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        system.place().await;
    }
    let targets = format!(
        "--target all={} --target order-api={}",
        system.ops_url, system.order_url
    );
    let tmux = Tmux::start(&format!(
        "{} {targets} --refresh 300ms",
        env!("CARGO_BIN_EXE_tui")
    ));
    let screen = tmux
        .wait_for(
            "both targets up, incidents listed",
            Duration::from_secs(30),
            |s| {
                service(s, "all").contains(" up ")
                    && service(s, "order-api").contains(" up ")
                    && row(s, "payment-slowdown").contains("off")
            },
        )
        .await;
    assert!(screen.contains("Incidents: none active"), "{screen}");
    assert!(!system.incident_active("payment-slowdown").await);

    // The instructor's key.
    tmux.keys("1");
    let screen = tmux
        .wait_for("payment-slowdown ON", Duration::from_secs(15), |s| {
            row(s, "payment-slowdown").contains(" ON ") && s.contains("Incidents: 1 ACTIVE")
        })
        .await;
    assert!(
        system.incident_active("payment-slowdown").await,
        "the key switched it on the ops server"
    );
    tmux.wait_for(
        "the switch in the event log",
        Duration::from_secs(10),
        |s| s.contains("incident payment-slowdown switched on (all)"),
    )
    .await;
    eprintln!("--- dashboard with payment-slowdown on ---\n{screen}");

    // Orders placed now are paid slowly: p99 over the window climbs above 1 s.
    for _ in 0..4 {
        system.place().await;
    }
    let screen = tmux
        .wait_for(
            "payment p99 over the window above 1 s",
            Duration::from_secs(60),
            |s| window_p99(s).is_some_and(|p99| p99 >= 1.0),
        )
        .await;
    eprintln!("--- payments slowed down ---\n{screen}");

    // `--once` sees the same, without a terminal.
    let once = Command::new(env!("CARGO_BIN_EXE_tui"))
        .args(targets.split(' '))
        .args(["--once", "--refresh", "500ms"])
        .output()
        .unwrap();
    assert!(once.status.success());
    let text = String::from_utf8(once.stdout).unwrap();
    assert!(text.contains("[1] ON  payment-slowdown"), "{text}");
    assert!(text.contains("all                up"), "{text}");
    eprintln!("--- --once ---\n{text}");

    // The help overlay, on and off.
    tmux.keys("?");
    tmux.wait_for("help overlay", Duration::from_secs(5), |s| {
        s.contains("switch payment-slowdown on/off")
    })
    .await;
    tmux.keys("?");
    tmux.wait_for("help overlay gone", Duration::from_secs(5), |s| {
        !s.contains("switch payment-slowdown on/off")
    })
    .await;

    // The same key switches it off again.
    tmux.keys("1");
    tmux.wait_for("payment-slowdown off", Duration::from_secs(15), |s| {
        row(s, "payment-slowdown").contains("off") && s.contains("Incidents: none active")
    })
    .await;
    assert!(!system.incident_active("payment-slowdown").await);

    // The system goes away; the dashboard stays, and says so.
    system.stop().await;
    let screen = tmux
        .wait_for("the services shown down", Duration::from_secs(15), |s| {
            service(s, "all").contains(" down ") && s.contains("all went down")
        })
        .await;
    assert!(tmux.running(), "the dashboard survives its targets");
    eprintln!("--- after the system stopped ---\n{screen}");

    tmux.keys("q");
    let started = Instant::now();
    while tmux.running() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "q did not quit:\n{}",
            tmux.screen()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
