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
/// 10 s, and admission control's 1 s target meaningless). `phase4-chaos all` gives
/// these to its processes and to the provider unless the environment sets them.
pub const PHASE4_DEFAULTS: [(&str, &str); 5] = [
    ("PAYMENT_LATENCY", "50ms..200ms"),
    ("PAYMENT_FAILURE_RATE", "0.05"),
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
            "DELIVERY_PREPARE_AFTER" => settings.prepare_after = duration(&value)?,
            "DELIVERY_DISPATCH_AFTER" => settings.dispatch_after = duration(&value)?,
            "DELIVERY_DELIVER_AFTER" => settings.deliver_after = duration(&value)?,
            other => anyhow::bail!("{other}: a phase 4 default with no setting"),
        }
    }
    Ok(())
}

/// Where the second order API replica's ops server listens (the first has phase 3's
/// 9401; 9402–9406 are the other services').
pub const SECOND_ORDER_OPS: &str = "127.0.0.1:9407";
/// The gateways' ops servers: both gateways share 127.0.0.1:3000 (`SO_REUSEPORT`, the
/// kernel spreads connections), each has its own ops port.
pub const GATEWAY_OPS: [&str; 2] = ["127.0.0.1:9410", "127.0.0.1:9411"];

/// The processes of phase 4's platform: phase 3's services one process each
/// (`phase4-chaos node ROLE`, ops on 9401–9406), a second order API replica (ops
/// 9407), and two gateways in front of both replicas (unless `gateway_args` is
/// `None`), each given `gateway_args`. The provider simulator is not among them: it
/// stands for a third party and runs in the supervisor's own process.
pub fn platform(
    order_addrs: [SocketAddr; 2],
    stock: i64,
    gateway_args: Option<&[String]>,
) -> Vec<Program> {
    let [first, second] = order_addrs.map(|a| a.to_string());
    let env = phase4_env();
    let ops = |role: Role| Some(role.default_ops_addr());
    let stock = stock.to_string();
    let mut programs = vec![
        Program::new(
            "order-1",
            &["node", "order", "--addr", &first],
            ops(Role::Order),
        ),
        Program::new(
            "order-2",
            &[
                "node",
                "order",
                "--addr",
                &second,
                "--ops-addr",
                SECOND_ORDER_OPS,
            ],
            SECOND_ORDER_OPS.parse().ok(),
        ),
        Program::new("payment", &["node", "payment"], ops(Role::Payment)),
        Program::new(
            "inventory",
            &["node", "inventory", "--stock", &stock],
            ops(Role::Inventory),
        ),
        Program::new(
            "notification",
            &["node", "notification"],
            ops(Role::Notification),
        ),
        Program::new("delivery", &["node", "delivery"], ops(Role::Delivery)),
        Program::new("relay", &["node", "relay"], ops(Role::Relay)),
    ];
    if let Some(extra) = gateway_args {
        let upstreams = format!("http://{first},http://{second}");
        for (i, ops) in GATEWAY_OPS.iter().enumerate() {
            let mut args = vec![
                "gateway".to_owned(),
                "--reuse-port".to_owned(),
                "--ops-addr".to_owned(),
                (*ops).to_owned(),
                "--upstream".to_owned(),
                upstreams.clone(),
            ];
            args.extend(extra.iter().cloned());
            programs.push(Program {
                name: format!("gateway-{}", i + 1),
                args,
                env: Vec::new(),
                ops: ops.parse().ok(),
            });
        }
    }
    for program in &mut programs {
        program.env.clone_from(&env);
    }
    programs
}

/// `phase4-chaos all`: the provider simulator here, every other part a supervised
/// process, until Ctrl-C or SIGTERM.
pub async fn supervised(
    programs: Vec<Program>,
    settings: SupervisorSettings,
) -> anyhow::Result<()> {
    let shutdown = common::shutdown::on_signal();
    let mut phase2 = phase2_events::config::Settings::defaults();
    apply_phase4_defaults(&mut phase2)?;
    let provider = phase2_events::system::Provider::build(&phase2).await?;
    let provider_stop = CancellationToken::new();
    let provider = tokio::spawn(provider.run(provider_stop.clone()));
    let binary = std::env::current_exe().context("finding this program, to start its processes")?;
    let result = Supervisor::new(settings, binary)
        .run(programs, shutdown)
        .await;
    // After the services: they may still be charging while they drain.
    provider_stop.cancel();
    provider.await??;
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
        let addrs = [
            "127.0.0.1:3100".parse().unwrap(),
            "127.0.0.1:3101".parse().unwrap(),
        ];
        let programs = platform(addrs, 10, Some(&["--no-shedding".to_owned()]));
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
        assert_eq!(platform(addrs, 10, None).len(), 7, "--without-gateway");
    }
}
