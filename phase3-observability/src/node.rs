//! One process of the observed system: phase 2's services, built by phase 2's own
//! code, with phase 3 wired around them — HTTP metrics on their routers, the probes,
//! the ops server, and the planned incidents spliced in where they belong.
//!
//! ```text
//!   payment service ──▶ FaultProxy (payment-slowdown) ──▶ provider
//!   notification    ──▶ FaultProxy (notification-backlog) ──▶ Redis
//!   order API router ─ cpu_hot_path middleware ─ track_http middleware
//!   every consume span ─ LeakLayer (memory-leak)
//! ```

use crate::incidents::{CpuBurn, Incidents, Leak};
use crate::metrics::Metrics;
use crate::probes::{Probes, Watch};
use anyhow::Context;
use axum::Router;
use common::shutdown::CancellationToken;
use phase2_events::config::Settings;
use phase2_events::fault_proxy::FaultProxy;
use phase2_events::flow::{Service, Topics};
use phase2_events::services::delivery::DeliveryService;
use phase2_events::services::inventory::InventoryService;
use phase2_events::services::notification::NotificationService;
use phase2_events::services::order::OrderService;
use phase2_events::services::payment::PaymentService;
use phase2_events::system::{Provider, Relays, System};
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::time::Duration;
use tokio::net::TcpListener;

/// What a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    All,
    Order,
    Payment,
    Inventory,
    Notification,
    Delivery,
    Relay,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Order => "order",
            Role::Payment => "payment",
            Role::Inventory => "inventory",
            Role::Notification => "notification",
            Role::Delivery => "delivery",
            Role::Relay => "relay",
        }
    }

    /// The ops server's default address: 9400 for `all`, 9401… for one service each
    /// (what `deploy/prometheus/prometheus.yml` scrapes).
    pub fn default_ops_addr(self) -> SocketAddr {
        let port = 9400
            + match self {
                Role::All => 0,
                Role::Order => 1,
                Role::Payment => 2,
                Role::Inventory => 3,
                Role::Notification => 4,
                Role::Delivery => 5,
                Role::Relay => 6,
            };
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn runs(self, service: Role) -> bool {
        self == Role::All || self == service
    }
}

/// Phase 3's flags, next to phase 2's.
#[derive(Debug, Clone, clap::Args)]
pub struct Observed {
    #[command(flatten)]
    pub settings: Settings,
    #[command(flatten)]
    pub incidents: crate::incidents::IncidentSettings,
    /// The ops server (/metrics, /health, /admin/incidents); default 127.0.0.1:9400
    /// for `all`, 9401–9406 for order, payment, inventory, notification, delivery, relay.
    #[arg(long, env = "OPS_ADDR")]
    pub ops_addr: Option<SocketAddr>,
    /// How often lag, dead letters and the outboxes are sampled.
    #[arg(long, env = "PROBE_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub probe_interval: Duration,
}

type Task = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// A built process, ready to run.
pub struct Node {
    role: Role,
    ops: TcpListener,
    ops_router: Router,
    incidents: Incidents,
    probes: Probes,
    /// The provider simulator, for `all` without `--payment-url`: stopped after the
    /// services, which may still be charging while they drain.
    provider: Option<Provider>,
    services: Box<dyn FnOnce(CancellationToken) -> Task + Send>,
    order_addr: Option<SocketAddr>,
    /// Cancelled at shutdown: `/ready` then says `draining` while the services drain.
    draining: CancellationToken,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("role", &self.role)
            .field("incidents", &self.incidents)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Builds `role`'s services with phase 3 around them, recording into `metrics`;
    /// `leak` is the one whose layer the subscriber has.
    pub async fn build(
        role: Role,
        observed: Observed,
        metrics: Metrics,
        leak: &Leak,
    ) -> anyhow::Result<Node> {
        let mut settings = observed.settings;
        let mut incidents = Incidents::builder();
        incidents.memory_leak(leak);

        // payment-slowdown: the payment service reaches the provider through a proxy.
        let mut provider = None;
        if role.runs(Role::Payment) {
            let upstream = match &settings.payment_url {
                Some(url) => url.clone(),
                None if role == Role::All => {
                    let p = Provider::build(&settings).await?;
                    let url = p.url();
                    provider = Some(p);
                    url
                }
                None => settings.payment_url(),
            };
            let proxy = proxy_to(&upstream).await?;
            settings.payment_url = Some(format!("http://{}", proxy.addr()));
            incidents.payment_slowdown(proxy, observed.incidents.payment_latency);
        }
        // notification-backlog: the notification service reaches Redis through a proxy.
        if role.runs(Role::Notification) {
            let proxy = proxy_to(&settings.redis_url).await?;
            settings.redis_url = replace_authority(&settings.redis_url, proxy.addr());
            incidents.notification_backlog(proxy, observed.incidents.redis_latency);
        }
        let cpu = CpuBurn::new(observed.incidents.cpu_burn);
        if role.runs(Role::Order) {
            incidents.cpu_hot_path(&cpu);
        }
        let incidents = incidents.build(&metrics);

        let http_metrics = metrics.clone();
        let wrap = move |service: &'static str, router: Router| {
            let router = if service == "order" {
                router.layer(axum::middleware::from_fn_with_state(
                    cpu.clone(),
                    crate::incidents::cpu_hot_path,
                ))
            } else {
                router
            };
            router.layer(axum::middleware::from_fn_with_state(
                http_metrics.clone(),
                crate::metrics::track_http,
            ))
        };

        let mut order_addr = None;
        let services: Box<dyn FnOnce(CancellationToken) -> Task + Send> = match role {
            Role::All => {
                let system = System::build(settings.clone()).await?.map_routers(wrap);
                order_addr = Some(system.order_addr());
                Box::new(move |stop| Box::pin(system.run(stop)))
            }
            Role::Order => {
                let order = OrderService::build(&settings)
                    .await?
                    .map_router(|r| wrap("order", r));
                order_addr = Some(order.addr());
                Box::new(move |stop| Box::pin(order.run(stop)))
            }
            Role::Payment => {
                let s = PaymentService::build(&settings).await?;
                Box::new(move |stop| Box::pin(s.run(stop)))
            }
            Role::Inventory => {
                let s = InventoryService::build(&settings).await?;
                Box::new(move |stop| Box::pin(s.run(stop)))
            }
            Role::Notification => {
                let s = NotificationService::build(&settings)
                    .await?
                    .map_router(|r| wrap("notification", r));
                Box::new(move |stop| Box::pin(s.run(stop)))
            }
            Role::Delivery => {
                let s = DeliveryService::build(&settings).await?;
                Box::new(move |stop| Box::pin(s.run(stop)))
            }
            Role::Relay => {
                let s = Relays::build(&settings).await?;
                Box::new(move |stop| Box::pin(s.run(stop)))
            }
        };

        let watch = watch(role, &settings).await?;
        // Readiness checks the databases this role's services use (a pool of one
        // connection each, apart from the services' own; `all` and `relay` share the
        // outbox probe's).
        let own = match role {
            Role::Order => Some(Service::Order),
            Role::Payment => Some(Service::Payment),
            Role::Inventory => Some(Service::Inventory),
            Role::Delivery => Some(Service::Delivery),
            Role::All | Role::Relay | Role::Notification => None,
        };
        let mut databases = watch.outboxes.clone();
        if let Some((service, url)) = settings
            .databases()
            .into_iter()
            .find(|(s, _)| Some(*s) == own)
        {
            databases.push((
                service.name().to_owned(),
                common::db::connect(url, 1).await?,
            ));
        }
        let probes = Probes::new(&metrics, &settings.brokers, watch, observed.probe_interval)?;
        let draining = CancellationToken::new();
        let readiness = crate::ops::Readiness {
            draining: draining.clone(),
            databases,
        };
        let ops_addr = observed.ops_addr.unwrap_or_else(|| role.default_ops_addr());
        let ops = common::http::listen(ops_addr, "the ops server", "--ops-addr").await?;
        Ok(Node {
            role,
            ops_router: crate::ops::router(role.name(), metrics, incidents.clone(), readiness),
            ops,
            incidents,
            probes,
            provider,
            services,
            order_addr,
            draining,
        })
    }

    pub fn ops_addr(&self) -> SocketAddr {
        self.ops
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The order API's address, when this process runs it.
    pub fn order_addr(&self) -> Option<SocketAddr> {
        self.order_addr
    }

    pub fn incidents(&self) -> &Incidents {
        &self.incidents
    }

    /// Runs until `shutdown`; then the services drain, and incidents are cleared.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(role = self.role.name(), ops = %self.ops_addr(), "phase 3 ops server listening (/metrics, /admin/incidents)");
        let provider_stop = CancellationToken::new();
        let provider = self
            .provider
            .map(|p| tokio::spawn(p.run(provider_stop.clone())));
        let probes = tokio::spawn(self.probes.run(shutdown.clone()));
        // The ops server outlives the services: while they drain, `/health` still
        // answers (nothing kills the process early) and `/ready` says `draining`.
        let ops_stop = CancellationToken::new();
        let ops = tokio::spawn(
            axum::serve(self.ops, self.ops_router)
                .with_graceful_shutdown(ops_stop.clone().cancelled_owned())
                .into_future(),
        );
        let draining = self.draining.clone();
        let watch_shutdown = shutdown.clone();
        tokio::spawn(async move {
            watch_shutdown.cancelled().await;
            draining.cancel();
        });
        let result = (self.services)(shutdown.clone()).await;
        ops_stop.cancel();
        self.incidents.clear();
        provider_stop.cancel();
        if let Some(provider) = provider {
            provider.await??;
        }
        probes.await?;
        ops.await??;
        result
    }
}

/// What `role`'s probes watch: its own groups' lag; for `all` and `relay`, the
/// outboxes and the dead-letter topics too (one process reports each).
async fn watch(role: Role, settings: &Settings) -> anyhow::Result<Watch> {
    let topics = Topics::new(&settings.namespace);
    let mine = |group: &str| -> bool {
        let service = match role {
            Role::All => return true,
            Role::Relay => return false,
            Role::Order => Service::Order,
            Role::Payment => Service::Payment,
            Role::Inventory => Service::Inventory,
            Role::Notification => Service::Notification,
            Role::Delivery => Service::Delivery,
        };
        let own = topics.group(service);
        group == own || group == phase2_events::consumer::retry_group(&own)
    };
    let groups = topics
        .subscriptions()
        .into_iter()
        .filter(|(group, _)| mine(group))
        .collect();
    let mut watch = Watch {
        groups,
        ..Watch::default()
    };
    if matches!(role, Role::All | Role::Relay) {
        watch.dead_letter_topics = topics
            .main()
            .iter()
            .map(|t| phase2_events::consumer::dlq_topic(t))
            .collect();
        for (service, url) in settings.databases() {
            let pool = common::db::connect(url, 1).await?;
            if service == Service::Payment {
                watch.payments = Some(pool.clone());
            }
            watch.outboxes.push((service.name().to_owned(), pool));
        }
    }
    Ok(watch)
}

/// A fault proxy (no fault yet) in front of the server in `url`.
async fn proxy_to(url: &str) -> anyhow::Result<FaultProxy> {
    let upstream = authority(url)
        .to_socket_addrs()
        .with_context(|| format!("resolving {url}"))?
        .next()
        .with_context(|| format!("{url} resolves to no address"))?;
    Ok(FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], 0)), upstream).await?)
}

/// `scheme://user:pw@host:port/path` → `host:port`.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split(['/', '?']).next().unwrap_or(rest);
    rest.rsplit_once('@').map_or(rest, |(_, host)| host)
}

/// `url` with its `host:port` replaced by `addr` (credentials and path kept).
fn replace_authority(url: &str, addr: SocketAddr) -> String {
    let host = authority(url);
    url.replacen(host, &addr.to_string(), 1)
}

/// One role as a process of its own: instruments installed (metrics, logs, traces),
/// the node built and run until Ctrl-C or SIGTERM, traces flushed before it returns.
/// `phase3-observability ROLE` is this; so is phase 4's `phase4-chaos node ROLE`,
/// each process its supervisor starts.
pub async fn serve(role: Role, observed: Observed) -> anyhow::Result<()> {
    let (instruments, provider) =
        crate::Instruments::install(role.name(), observed.incidents.leak_bytes_per_event)?;
    let shutdown = common::shutdown::on_signal();
    let node = Node::build(role, observed, instruments.metrics, &instruments.leak).await?;
    let result = node.run(shutdown).await;
    // Export what is still batched before the process exits.
    if let Err(err) = provider.shutdown() {
        eprintln!("flushing traces: {err}");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_of_a_url_is_found_and_replaced() {
        assert_eq!(authority("http://127.0.0.1:3001"), "127.0.0.1:3001");
        assert_eq!(
            authority("redis://:secret@127.0.0.1:6379/0"),
            "127.0.0.1:6379"
        );
        let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(
            replace_authority("redis://:secret@127.0.0.1:6379/0", addr),
            "redis://:secret@127.0.0.1:40000/0"
        );
    }

    #[test]
    fn each_role_has_its_own_ops_port() {
        use clap::ValueEnum;
        let ports: std::collections::BTreeSet<u16> = Role::value_variants()
            .iter()
            .map(|r| r.default_ops_addr().port())
            .collect();
        assert_eq!(ports.len(), Role::value_variants().len());
    }
}
