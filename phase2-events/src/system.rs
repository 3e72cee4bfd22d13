//! Starting services: one each (`phase2-events payment`), or all of them in one
//! process (`phase2-events all`) for a quick start and for the scenario tests.

use crate::config::Settings;
use crate::flow::Service;
use crate::relay::{FlowWindow, Relay};
use crate::services::delivery::DeliveryService;
use crate::services::inventory::InventoryService;
use crate::services::notification::NotificationService;
use crate::services::order::OrderService;
use crate::services::payment::PaymentService;
use crate::services::{open_database, supervise};
use axum::Router;
use common::payment::Simulator;
use common::shutdown::CancellationToken;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Logged by a relay that failed with `--relay-restart false`: its outbox is not
/// published any more.
pub const LOG_RELAY_DEAD: &str =
    "relay failed and is not restarted (RELAY_RESTART=false): its outbox stays unpublished";

/// The outbox relays: one per service database (each with its own leader lock, so
/// several `relay` processes can run for availability).
#[derive(Debug)]
pub struct Relays {
    relays: Vec<(String, Relay)>,
    /// `--relay-restart`: run a relay's loop again when it fails (the default).
    restart: bool,
}

impl Relays {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        // A producer is made without a broker, and would then wait for one in
        // silence: a relay started before `cargo xtask up` says so instead.
        crate::kafka::check_reachable(&settings.brokers).await?;
        let producer = crate::kafka::producer(&settings.brokers)?;
        let mut relays = Vec::new();
        for (service, url) in settings.databases() {
            let pool = open_database(url, 2, Vec::new()).await?;
            let mut relay = Relay::new(pool, url, producer.clone())
                .named(service.name())
                .with_poll_interval(settings.relay_poll_interval);
            if service == Service::Order && settings.flow_window > 0 {
                relay = relay.with_flow_window(FlowWindow::new(
                    settings.flow_window,
                    crate::services::order::OPEN_ORDERS,
                ));
            }
            relays.push((format!("{} outbox relay", service.name()), relay));
        }
        Ok(Relays {
            relays,
            restart: settings.relay_restart,
        })
    }

    /// The relays' fault switches (scenario tests).
    pub fn faults(&self) -> Vec<std::sync::Arc<crate::relay::RelayFaults>> {
        self.relays
            .iter()
            .map(|(_, relay)| relay.faults())
            .collect()
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tasks = JoinSet::new();
        for (name, relay) in self.relays {
            let stop = shutdown.clone();
            if !self.restart {
                // The defence switched off: a relay whose connection died stays dead,
                // while the process — and its health check — carry on.
                tasks.spawn(async move {
                    if let Err(err) = relay.run(stop).await {
                        tracing::error!(task = %name, error = format!("{err:#}"), "{}", LOG_RELAY_DEAD);
                    }
                });
                continue;
            }
            tasks.spawn(supervise(name, shutdown.clone(), move || {
                relay.clone().run(stop.clone())
            }));
        }
        while let Some(done) = tasks.join_next().await {
            done?;
        }
        Ok(())
    }
}

/// The payment provider simulator (phase 1's), served on `--provider-addr`.
#[derive(Debug)]
pub struct Provider {
    listener: TcpListener,
    simulator: Simulator,
}

impl Provider {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let addr = settings.provider.addr;
        // Already running elsewhere? `--payment-url` points at it instead.
        let listener =
            common::http::listen(addr, "the payment provider simulator", "--provider-addr").await?;
        Ok(Provider {
            listener,
            simulator: Simulator::new(&settings.provider),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.listener.local_addr().expect("bound"))
    }

    pub fn simulator(&self) -> &Simulator {
        &self.simulator
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.simulator.serve(self.listener, shutdown).await?;
        Ok(())
    }
}

/// Every service in one process.
#[derive(Debug)]
pub struct System {
    provider: Option<Provider>,
    order: OrderService,
    payment: PaymentService,
    inventory: InventoryService,
    notification: NotificationService,
    delivery: DeliveryService,
    relays: Relays,
}

impl System {
    /// Builds everything. Without `--payment-url` the provider simulator is started
    /// here too, and the payment service pointed at it.
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        let provider = match settings.payment_url {
            Some(_) => None,
            None => {
                let provider = Provider::build(&settings).await?;
                settings.payment_url = Some(provider.url());
                Some(provider)
            }
        };
        Ok(System {
            order: OrderService::build(&settings).await?,
            payment: PaymentService::build(&settings).await?,
            inventory: InventoryService::build(&settings).await?,
            notification: NotificationService::build(&settings).await?,
            delivery: DeliveryService::build(&settings).await?,
            relays: Relays::build(&settings).await?,
            provider,
        })
    }

    /// Wraps the routers of the services with an HTTP API (`order`, `notification`).
    pub fn map_routers(mut self, wrap: impl Fn(&'static str, Router) -> Router) -> Self {
        self.order = self.order.map_router(|router| wrap("order", router));
        self.notification = self
            .notification
            .map_router(|router| wrap("notification", router));
        self
    }

    pub fn order_addr(&self) -> SocketAddr {
        self.order.addr()
    }

    pub fn notification_addr(&self) -> SocketAddr {
        self.notification.addr()
    }

    /// The in-process provider simulator, if this system started one.
    pub fn simulator(&self) -> Option<&Simulator> {
        self.provider.as_ref().map(Provider::simulator)
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(
            order_api = %self.order.addr(),
            notification = %self.notification.addr(),
            "all phase 2 services running"
        );
        let provider_stop = CancellationToken::new();
        let provider = self
            .provider
            .map(|p| tokio::spawn(p.simulator.serve(p.listener, provider_stop.clone())));
        let (order, payment, inventory, notification, delivery, relays) = tokio::join!(
            self.order.run(shutdown.clone()),
            self.payment.run(shutdown.clone()),
            self.inventory.run(shutdown.clone()),
            self.notification.run(shutdown.clone()),
            self.delivery.run(shutdown.clone()),
            self.relays.run(shutdown.clone()),
        );
        provider_stop.cancel();
        if let Some(provider) = provider {
            provider.await??;
        }
        // The simulator outlives the services' drain: in-flight payments may still call it.
        for result in [order, payment, inventory, notification, delivery, relays] {
            result?;
        }
        tracing::info!("all phase 2 services stopped");
        Ok(())
    }
}
