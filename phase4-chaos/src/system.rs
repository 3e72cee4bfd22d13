//! `phase4-chaos all`: phase 3's whole system in one process, its order API moved
//! off 127.0.0.1:3000 to make room for the gateway, which takes the door — and a
//! second order API replica (phase 3's `order` role: the API and a second member of
//! the saga's consumer group), so that the gateway has two to choose from.
//!
//! One process keeps the first hour simple; issue 16's supervisor runs each service
//! as a process of its own, so that one can be killed.

use crate::gateway::{Gateway, GatewaySettings};
use anyhow::Context;
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
