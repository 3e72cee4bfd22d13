//! What the phase 4 tests share: a gateway on free ports in front of an order API,
//! tokens, unique names, and `phase4-chaos load`'s flags as on its command line.
#![allow(dead_code)] // each test file uses a part of it

use common::shutdown::CancellationToken;
use phase2_events::flow::Service;
use phase2_events::testing::{Options, TestSystem};
use phase4_chaos::gateway::auth::{DEVELOPMENT_KEY, Keys};
use phase4_chaos::gateway::{Gateway, GatewaySettings};
use phase4_chaos::load::run::LoadArgs;
use std::time::Duration;
use tokio::net::TcpListener;

/// A gateway on a free port in front of `upstream`, configured by `args` (as on its
/// command line) and the test environment (`REDIS_URL`).
pub struct Door {
    pub url: String,
    pub ops: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Door {
    pub async fn open(upstream: &str, args: &[&str]) -> Door {
        let mut argv = vec!["--upstream", upstream];
        argv.extend_from_slice(args);
        let settings: GatewaySettings = phase4_chaos::parse_flags(&argv).unwrap();
        let gateway = Gateway::new(settings)
            .await
            .expect("the gateway needs Redis: start it with `cargo xtask up`");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ops = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (url, ops_url) = (
            format!("http://{}", listener.local_addr().unwrap()),
            format!("http://{}", ops.local_addr().unwrap()),
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn(gateway.serve(listener, ops, stop.clone()));
        Door {
            url,
            ops: ops_url,
            stop,
            task,
        }
    }

    pub async fn close(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// The gateway's `/metrics`, as text.
pub async fn metrics(http: &reqwest::Client, door: &Door) -> String {
    http.get(format!("{}/metrics", door.ops))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub fn token(customer: &str) -> String {
    Keys::hs256(DEVELOPMENT_KEY.as_bytes())
        .unwrap()
        .mint(customer, Duration::from_secs(600))
        .unwrap()
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// `phase4-chaos load --url URL ARGS…` as parsed from its command line.
pub fn load_args(url: &str, args: &[&str]) -> LoadArgs {
    let mut argv = vec!["--url", url];
    argv.extend_from_slice(args);
    phase4_chaos::parse_flags(&argv).unwrap()
}

/// Phase 2's order service alone (its API and the saga) on fresh databases and
/// topics: the real order API the gateway fronts in these tests.
pub async fn order_api() -> TestSystem {
    TestSystem::start(Options {
        services: &[Service::Order],
        ..Options::default()
    })
    .await
}
