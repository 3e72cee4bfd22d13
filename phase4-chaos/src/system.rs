//! `phase4-chaos all`: phase 3's whole system in one process, its order API moved
//! off 127.0.0.1:3000 to make room for the gateway, which takes the door — and a
//! second order API replica (phase 3's `order` role: the API and a second member of
//! the saga's consumer group), so that the gateway has two to choose from.
//!
//! By default every service is a process of its own under [`crate::supervisor`]
//! ([`platform`], [`supervised`]), so that one can be killed and come back;
//! `--one-process` runs them all in one ([`all`]), as phases 2 and 3 did.

use crate::gateway::{Gateway, GatewaySettings};
use crate::supervisor::{Program, Supervisor, SupervisorSettings};
use anyhow::Context;
use common::shutdown::CancellationToken;
use phase2_events::config::Settings;
use phase3_observability::Instruments;
use phase3_observability::node::{Node, Observed, Role};
use std::net::SocketAddr;

/// Runs phase 3's `all` with its order API on `order_addrs[0]`, a second replica on
/// `order_addrs[1]`, every SKU's stock raised to `stock`, and the gateway in front of
/// both (unless `None`: run apart), until Ctrl-C or SIGTERM.
pub async fn all(
    order_addrs: [SocketAddr; 2],
    stock: i64,
    gateway: Option<GatewaySettings>,
) -> anyhow::Result<()> {
    // Phase 3's flags as its `all` reads them: from the environment and defaults.
    let mut observed = crate::parse_flags::<Observed>(&[])
        .context("reading phase 3's settings from the environment")?;
    apply_phase4_defaults(&mut observed.settings)?;
    let mut second = observed.clone();
    observed.settings.addr = order_addrs[0];
    second.settings.addr = order_addrs[1];
    second.ops_addr = Some(Role::Order.default_ops_addr());
    let gateway = gateway.map(|mut gateway| {
        if gateway.upstreams == [crate::gateway::DEFAULT_UPSTREAM] {
            gateway.upstreams = order_addrs.iter().map(|a| format!("http://{a}")).collect();
        }
        gateway
    });
    let (instruments, provider) =
        Instruments::install("phase4", observed.incidents.leak_bytes_per_event)?;
    let shutdown = common::shutdown::on_signal();
    let node = Node::build(Role::All, observed, instruments.metrics, &instruments.leak).await?;
    let inventory = common::db::connect(&second.settings.inventory_database_url, 1).await?;
    let raised = phase2_events::services::inventory::restock(&inventory, stock).await?;
    inventory.close().await;
    tracing::info!(stock, raised, "stock raised for load runs (--stock)");
    let replica_instruments = Instruments::new(second.incidents.leak_bytes_per_event);
    let replica = Node::build(
        Role::Order,
        second,
        replica_instruments.metrics,
        &replica_instruments.leak,
    )
    .await?;
    let gateway = match gateway {
        Some(settings) => Some(Gateway::new(settings).await?),
        None => None,
    };
    let (system, replica, door) = tokio::join!(
        node.run(shutdown.clone()),
        replica.run(shutdown.clone()),
        async {
            let Some(gateway) = gateway else {
                return Ok(()); // run apart (`--without-gateway`)
            };
            let served = gateway.run(shutdown.clone()).await;
            if served.is_err() {
                shutdown.cancel(); // no door, no point running the rest
            }
            served
        }
    );
    if let Err(err) = provider.shutdown() {
        eprintln!("flushing traces: {err}");
    }
    system.and(replica).and(door)
}

/// Phase 4 puts the platform under the brief's load, so its outside world answers
/// like a production one: the provider like a real card API (50–200 ms, 5 % transient
/// failures; phases 1–3's 2–5 s and 30 % exaggerate to be seen), the kitchen and the
/// courier at once (phases 2–3's 10 s of delivery steps would make every order take
/// 10 s, and admission control's 1 s target meaningless), and the payment client's
/// timeouts sized to that provider (an attempt 1 s, a payment 3 s: the payment
/// worker's lease is twice the deadline, and a worker killed during a call holds its
/// charge that long). `phase4-chaos all` gives these to its processes and to the
/// provider unless the environment sets them.
pub const PHASE4_DEFAULTS: [(&str, &str); 7] = [
    ("PAYMENT_LATENCY", "50ms..200ms"),
    ("PAYMENT_FAILURE_RATE", "0.05"),
    ("PAYMENT_ATTEMPT_TIMEOUT", "1s"),
    ("PAYMENT_DEADLINE", "3s"),
    ("DELIVERY_PREPARE_AFTER", "0s"),
    ("DELIVERY_DISPATCH_AFTER", "0s"),
    ("DELIVERY_DELIVER_AFTER", "0s"),
];

/// [`PHASE4_DEFAULTS`] the environment does not set.
pub fn phase4_env() -> Vec<(String, String)> {
    PHASE4_DEFAULTS
        .iter()
        .filter(|(key, _)| std::env::var_os(key).is_none())
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

/// [`phase4_env`] applied to settings already read (the processes this one runs
/// itself: the provider, or everything with `--one-process`).
pub fn apply_phase4_defaults(settings: &mut Settings) -> anyhow::Result<()> {
    let duration = |v: &str| humantime::parse_duration(v).context("a phase 4 default");
    for (key, value) in phase4_env() {
        match key.as_str() {
            "PAYMENT_LATENCY" => {
                settings.provider.latency = value.parse().map_err(anyhow::Error::msg)?;
            }
            "PAYMENT_FAILURE_RATE" => settings.provider.failure_rate = value.parse()?,
            "PAYMENT_ATTEMPT_TIMEOUT" => settings.payment.attempt_timeout = duration(&value)?,
            "PAYMENT_DEADLINE" => settings.payment.deadline = duration(&value)?,
            "DELIVERY_PREPARE_AFTER" => settings.prepare_after = duration(&value)?,
            "DELIVERY_DISPATCH_AFTER" => settings.dispatch_after = duration(&value)?,
            "DELIVERY_DELIVER_AFTER" => settings.deliver_after = duration(&value)?,
            other => anyhow::bail!("{other}: a phase 4 default with no setting"),
        }
    }
    Ok(())
}

/// Where the platform's processes listen: phase 3's ports, and phase 4's beside them.
/// `all` uses them as they are; a scenario a test runs shifts every port by `offset`,
/// so that it runs beside anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub offset: u16,
}

impl Layout {
    pub const STANDARD: Layout = Layout { offset: 0 };

    fn at(self, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port + self.offset))
    }

    /// Where clients connect: both gateways (`SO_REUSEPORT`).
    pub fn gateway(self) -> SocketAddr {
        self.at(3000)
    }

    /// The gateways' ops servers.
    pub fn gateway_ops(self) -> [SocketAddr; 2] {
        [self.at(9410), self.at(9411)]
    }

    /// The provider simulator (a third party: it runs in the supervisor's process).
    pub fn provider(self) -> SocketAddr {
        self.at(3001)
    }

    pub fn notification(self) -> SocketAddr {
        self.at(3002)
    }

    /// The two order API replicas.
    pub fn orders(self) -> [SocketAddr; 2] {
        [self.at(3100), self.at(3101)]
    }

    /// A role's ops server (phase 3's 9401–9406).
    pub fn ops(self, role: Role) -> SocketAddr {
        self.at(role.default_ops_addr().port())
    }

    /// The second order API replica's ops server (the first has phase 3's 9401).
    pub fn second_order_ops(self) -> SocketAddr {
        self.at(9407)
    }

    /// The supervisor's `/processes` and `/metrics`.
    pub fn supervisor_ops(self) -> SocketAddr {
        self.at(9420)
    }

    /// A running chaos scenario's `/metrics`: its faults now, its orders.
    pub fn chaos_ops(self) -> SocketAddr {
        self.at(9430)
    }
}

/// The processes of phase 4's platform: phase 3's services one process each
/// (`phase4-chaos node ROLE`), a second order API replica, and two gateways in front
/// of both replicas (unless `gateway_args` is `None`), each given `gateway_args`. The
/// provider simulator is not among them: it stands for a third party and runs in the
/// supervisor's own process. Each gets `env` besides [`phase4_env`].
pub fn platform(
    layout: Layout,
    order_addrs: [SocketAddr; 2],
    stock: i64,
    gateway_args: Option<&[String]>,
    env: &[(String, String)],
) -> Vec<Program> {
    let [first, second] = order_addrs.map(|a| a.to_string());
    let ops = |role: Role| layout.ops(role).to_string();
    let provider = layout.provider().to_string();
    let notification = layout.notification().to_string();
    let stock = stock.to_string();
    let node = |name: &str, role: Role, extra: &[&str]| {
        let ops = ops(role);
        let mut args = vec!["node", role.name(), "--ops-addr", &ops];
        args.extend_from_slice(extra);
        Program::new(name, &args, Some(layout.ops(role)))
    };
    let second_ops = layout.second_order_ops().to_string();
    let mut programs = vec![
        node("order-1", Role::Order, &["--addr", &first]),
        Program::new(
            "order-2",
            &[
                "node",
                "order",
                "--ops-addr",
                &second_ops,
                "--addr",
                &second,
            ],
            Some(layout.second_order_ops()),
        ),
        node("payment", Role::Payment, &["--provider-addr", &provider]),
        node("inventory", Role::Inventory, &["--stock", &stock]),
        node(
            "notification",
            Role::Notification,
            &["--notification-addr", &notification],
        ),
        node("delivery", Role::Delivery, &[]),
        node("relay", Role::Relay, &[]),
    ];
    if let Some(extra) = gateway_args {
        let upstreams = format!("http://{first},http://{second}");
        for (i, ops) in layout.gateway_ops().iter().enumerate() {
            let mut args = vec![
                "gateway".to_owned(),
                "--reuse-port".to_owned(),
                "--addr".to_owned(),
                layout.gateway().to_string(),
                "--ops-addr".to_owned(),
                ops.to_string(),
                "--upstream".to_owned(),
                upstreams.clone(),
            ];
            args.extend(extra.iter().cloned());
            programs.push(Program {
                name: format!("gateway-{}", i + 1),
                args,
                env: Vec::new(),
                ops: Some(*ops),
            });
        }
    }
    let mut all_env = phase4_env();
    all_env.extend(env.iter().cloned());
    for program in &mut programs {
        program.env.clone_from(&all_env);
        // Static group membership: a restarted consumer rejoins as itself.
        program
            .env
            .push(("CONSUMER_INSTANCE".to_owned(), program.name.clone()));
    }
    programs
}

/// The provider simulator, running (in this process) until `stop`.
#[derive(Debug)]
pub struct RunningProvider {
    pub simulator: common::payment::Simulator,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningProvider {
    /// Phase 2's settings (from the environment) with phase 4's defaults, on `addr`.
    pub async fn start(addr: SocketAddr) -> anyhow::Result<RunningProvider> {
        let mut settings = Settings::defaults();
        apply_phase4_defaults(&mut settings)?;
        settings.provider.addr = addr;
        let provider = phase2_events::system::Provider::build(&settings).await?;
        let simulator = provider.simulator().clone();
        let stop = CancellationToken::new();
        let task = tokio::spawn(provider.run(stop.clone()));
        Ok(RunningProvider {
            simulator,
            stop,
            task,
        })
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

/// `phase4-chaos provider`: the payment provider simulator alone, as phase 5's
/// Deployment runs it (with phase 4's defaults unless the environment says
/// otherwise), and its ops server on `ops_addr`: `/health` and `/ready` (it depends on
/// nothing, so it is ready once it listens) and `/metrics`
/// (`provider_requests_received`). Until Ctrl-C or SIGTERM.
pub async fn provider(addr: SocketAddr, ops_addr: Option<SocketAddr>) -> anyhow::Result<()> {
    common::telemetry::init_json_logs();
    let provider = RunningProvider::start(addr).await?;
    let shutdown = common::shutdown::on_signal();
    let ops = match ops_addr {
        Some(ops_addr) => {
            let requests = prometheus_client::metrics::gauge::Gauge::<i64>::default();
            let mut registry = prometheus_client::registry::Registry::default();
            registry.register(
                "provider_requests_received",
                "Charge requests the provider simulator received",
                requests.clone(),
            );
            let registry = std::sync::Arc::new(registry);
            let simulator = provider.simulator.clone();
            let router = crate::ops_router(registry, move || {
                requests.set(simulator.requests_received() as i64);
            });
            let listener = tokio::net::TcpListener::bind(ops_addr)
                .await
                .with_context(|| format!("the provider's ops port {ops_addr} is taken"))?;
            let stop = shutdown.clone();
            Some(tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }))
        }
        None => None,
    };
    tracing::info!(%addr, ops = ?ops_addr, "payment provider simulator running");
    shutdown.cancelled().await;
    provider.stop().await?;
    if let Some(ops) = ops {
        ops.await??;
    }
    Ok(())
}

/// `phase4-chaos all`: the provider simulator here, every other part a supervised
/// process, until Ctrl-C or SIGTERM.
pub async fn supervised(
    programs: Vec<Program>,
    layout: Layout,
    settings: SupervisorSettings,
) -> anyhow::Result<()> {
    let shutdown = common::shutdown::on_signal();
    let provider = RunningProvider::start(layout.provider()).await?;
    let binary = std::env::current_exe().context("finding this program, to start its processes")?;
    let result = Supervisor::new(settings, binary)
        .run(programs, shutdown)
        .await;
    // After the services: they may still be charging while they drain.
    provider.stop().await?;
    result
}

/// `phase4-chaos node ROLE`: one of phase 3's roles as a process of its own; the
/// inventory raises every SKU's stock to `stock` first (a load run should not end in
/// a wall of `out_of_stock` cancellations).
pub async fn node(role: Role, observed: Observed, stock: Option<i64>) -> anyhow::Result<()> {
    if let Some(stock) = stock {
        // The inventory's migrations create the table; run them before restocking.
        let pool = phase2_events::services::open_database(
            &observed.settings.inventory_database_url,
            1,
            phase2_events::services::inventory::migrators(),
        )
        .await?;
        let raised = phase2_events::services::inventory::restock(&pool, stock).await?;
        pool.close().await;
        tracing::info!(stock, raised, "stock raised for load runs (--stock)");
    }
    phase3_observability::node::serve(role, observed).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase4_default_reaches_a_setting() {
        let mut settings = Settings::defaults();
        apply_phase4_defaults(&mut settings).unwrap();
        if std::env::var_os("DELIVERY_DELIVER_AFTER").is_none() {
            assert_eq!(settings.deliver_after, std::time::Duration::ZERO);
        }
    }

    #[test]
    fn the_platform_is_nine_processes_with_two_of_the_order_api_and_of_the_gateway() {
        let layout = Layout::STANDARD;
        let programs = platform(
            layout,
            layout.orders(),
            10,
            Some(&["--no-shedding".to_owned()]),
            &[],
        );
        let names: Vec<&str> = programs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "order-1",
                "order-2",
                "payment",
                "inventory",
                "notification",
                "delivery",
                "relay",
                "gateway-1",
                "gateway-2"
            ]
        );
        let gateway = &programs[7];
        assert!(gateway.args.ends_with(&["--no-shedding".to_owned()]));
        assert!(gateway.args.contains(&"--reuse-port".to_owned()));
        let ops: std::collections::BTreeSet<_> = programs.iter().map(|p| p.ops).collect();
        assert_eq!(ops.len(), programs.len(), "an ops port each");
        assert_eq!(
            platform(layout, layout.orders(), 10, None, &[]).len(),
            7,
            "--without-gateway"
        );
        let shifted = platform(Layout { offset: 10_000 }, layout.orders(), 10, None, &[]);
        assert_eq!(
            shifted[2].ops,
            "127.0.0.1:19402".parse().ok(),
            "payment's ops, shifted"
        );
    }
}
