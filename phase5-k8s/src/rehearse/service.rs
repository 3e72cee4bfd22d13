//! A Service, as kube-proxy makes one: a port that spreads connections over the
//! ready pods of a Deployment — one decision per TCP connection, no retries.
//!
//! The lesson it carries is *when* a pod leaves the endpoints. In a cluster, a pod's
//! deletion reaches the kubelet (which starts `preStop`, then SIGTERM) and the
//! endpoints controller → EndpointSlice → every node's kube-proxy (which stops
//! routing to it) **at the same time, along different paths**; the second path takes
//! from a fraction of a second to several seconds (kubernetes#67592). Here every
//! decision uses the endpoints as they were `lag` ago: a pod that closes its port on
//! SIGTERM without a `preStop` pause still gets new connections for `lag`, and they
//! are refused.

use super::kubelet::Deployment;
use anyhow::Context;
use common::shutdown::CancellationToken;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// How often the endpoints are looked at.
const SYNC_EVERY: Duration = Duration::from_millis(50);

/// What the Service did with the connections it was given.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Routed {
    pub connections: u64,
    /// Sent to an endpoint that refused the connection (its port already closed).
    pub refused: u64,
    /// Closed at once: no endpoint was ready.
    pub no_endpoint: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    refused: AtomicU64,
    no_endpoint: AtomicU64,
}

/// A running Service.
#[derive(Debug)]
pub struct Service {
    addr: SocketAddr,
    counters: Arc<Counters>,
    view: Arc<Mutex<Vec<SocketAddr>>>,
    stop: CancellationToken,
}

impl Service {
    /// Serves `deployment`'s container port `port` on a free port of 127.0.0.1,
    /// routing with the endpoints as they were `lag` ago.
    pub async fn start(
        deployment: Arc<Deployment>,
        port: &str,
        lag: Duration,
    ) -> anyhow::Result<Service> {
        deployment.template.port(port)?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a Service port")?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let view: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        // kube-proxy: the endpoints, late by `lag`.
        let history = {
            let deployment = deployment.clone();
            let view = view.clone();
            let stop = stop.clone();
            let port = port.to_owned();
            async move {
                let mut seen: VecDeque<(Instant, Vec<SocketAddr>)> = VecDeque::new();
                loop {
                    let now = Instant::now();
                    let endpoints = deployment
                        .history()
                        .iter()
                        .filter(|p| p.is_endpoint())
                        .filter_map(|p| p.addr(&port).ok())
                        .collect();
                    seen.push_back((now, endpoints));
                    while seen.len() > 1 && seen[1].0 + lag <= now {
                        seen.pop_front();
                    }
                    if let Some((at, endpoints)) = seen.front()
                        && *at + lag <= now
                    {
                        view.lock().expect("view").clone_from(endpoints);
                    }
                    tokio::select! {
                        () = tokio::time::sleep(SYNC_EVERY) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        };
        tokio::spawn(history);
        let accept = {
            let stop = stop.clone();
            let counters = counters.clone();
            let view = view.clone();
            async move {
                let next = AtomicUsize::new(0);
                loop {
                    let (client, _) = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok(accepted) => accepted,
                            Err(_) => continue,
                        },
                        () = stop.cancelled() => return,
                    };
                    counters.connections.fetch_add(1, Ordering::Relaxed);
                    let endpoints = view.lock().expect("view").clone();
                    if endpoints.is_empty() {
                        counters.no_endpoint.fetch_add(1, Ordering::Relaxed);
                        drop(client);
                        continue;
                    }
                    let target = endpoints[next.fetch_add(1, Ordering::Relaxed) % endpoints.len()];
                    let counters = counters.clone();
                    tokio::spawn(async move {
                        match TcpStream::connect(target).await {
                            Ok(mut server) => {
                                let mut client = client;
                                let _ =
                                    tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                            Err(_) => {
                                counters.refused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
            }
        };
        tokio::spawn(accept);
        Ok(Service {
            addr,
            counters,
            view,
            stop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the Service routes to `n` endpoints (its view is `lag` late).
    pub async fn wait_endpoints(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        while self.view.lock().expect("view").len() < n {
            anyhow::ensure!(
                start.elapsed() < limit,
                "the Service has fewer than {n} endpoints after {limit:?}"
            );
            tokio::time::sleep(SYNC_EVERY).await;
        }
        Ok(())
    }

    pub fn routed(&self) -> Routed {
        Routed {
            connections: self.counters.connections.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
            no_endpoint: self.counters.no_endpoint.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
