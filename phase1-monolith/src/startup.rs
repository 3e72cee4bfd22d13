//! Building and running the application.
//!
//! [`Application::build`] does everything that can fail (bind ports, connect and
//! migrate the database) before anything is served; [`Application::run_until_stopped`]
//! serves until the given token is cancelled. Tests bind port 0 and cancel the token;
//! `main` cancels it on SIGTERM/Ctrl-C. Same path, so shutdown is tested.

use crate::config::Settings;
use crate::reconciler::Reconciler;
use crate::store::OrderStore;
use crate::{health, orders};
use axum::Router;
use common::http::{HttpLimits, listen, with_standard_layers};
use common::payment::{PaymentClient, Simulator};
use common::shutdown::CancellationToken;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Phase 1's migrations (menu, orders, idempotency keys), compiled in; phase 2's
/// order service starts from them, and tests build the router on a database of their
/// own with them. (`tests/migrations.rs` checks the list against `migrations/`.)
pub fn migrator() -> sqlx::migrate::Migrator {
    common::embed_migrations!(
        "migrations",
        [
            "0001_menu.sql",
            "0002_orders.sql",
            "0003_idempotency_keys.sql"
        ]
    )
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: OrderStore,
    pub payment: PaymentClient,
    /// How long a repeated idempotent request waits for the first one's response.
    pub replay_wait: Duration,
}

#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    /// The in-process provider simulator, unless `--payment-url` points elsewhere.
    provider: Option<(TcpListener, Simulator)>,
    reconciler: Reconciler,
    state: AppState,
    /// SQLite or PostgreSQL, for the startup log line.
    backend: common::db::Backend,
}

/// Handlers that need only the store take `State<OrderStore>`, so phase 2 can mount
/// them on its own state.
impl axum::extract::FromRef<AppState> for OrderStore {
    fn from_ref(state: &AppState) -> OrderStore {
        state.store.clone()
    }
}

/// The router alone, for tests that call it without a socket.
pub fn router(state: AppState, limits: HttpLimits) -> Router {
    let (api, _doc) = api();
    with_standard_layers(api.with_state(state), limits)
}

/// The routes and their OpenAPI document (served at `GET /openapi.json`, checked in
/// as `openapi/orders.json`). `routes!` registers a handler and its `#[utoipa::path]`
/// documentation together, so the two cannot drift apart.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let routes = OpenApiRouter::new()
        .routes(routes!(orders::menu))
        .routes(routes!(orders::place_order))
        .routes(routes!(orders::get_order))
        .routes(routes!(common::http::health))
        .routes(routes!(health::ready));
    common::http::openapi::serve(
        routes,
        "FerrisEats phase 1: orders API",
        "A resilient monolith: an order is stored before it is paid, payments are retried \
         with backoff behind a circuit breaker, `Idempotency-Key` makes retries safe, and \
         in-doubt orders are settled by a reconciler. Every error is application/problem+json.",
    )
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        let backend = common::db::Backend::of(&settings.database_url)?;
        let pool = common::db::connect(&settings.database_url, settings.db_max_connections)
            .await
            .map_err(|err| match err.downcast::<common::unreachable::Unreachable>() {
                // Phase 1 needs no server at all unless told to use one.
                Ok(unreachable) => unreachable
                    .or("or drop --database-url / DATABASE_URL: the default SQLite file needs nothing")
                    .into(),
                Err(err) => err,
            })?;
        migrator().run(&pool).await?;
        let store = OrderStore::new(pool);

        let (provider, payment_url) = match &settings.payment_url {
            Some(url) => (None, url.clone()),
            None => {
                let listener = listen(
                    settings.provider.addr,
                    "the payment provider simulator",
                    "--provider-addr",
                )
                .await?;
                let url = format!("http://{}", listener.local_addr()?);
                (Some((listener, Simulator::new(&settings.provider))), url)
            }
        };
        let payment = PaymentClient::new(&payment_url, settings.payment.clone());
        let state = AppState {
            store: store.clone(),
            payment: payment.clone(),
            replay_wait: settings.replay_wait(),
        };
        let limits = HttpLimits {
            body_limit: settings.body_limit,
            request_timeout: settings.request_timeout,
        };
        let reconciler = Reconciler::new(
            store,
            payment,
            settings.reconcile_interval,
            settings.reconcile_after,
        );
        Ok(Application {
            listener: listen(settings.addr, "the order API", "--addr").await?,
            router: router(state.clone(), limits),
            provider,
            reconciler,
            state,
            backend,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    pub fn payment_url(&self) -> &str {
        self.state.payment.base_url()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then stops accepting connections, lets
    /// in-flight requests finish, and stops the reconciler and the simulator.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(
            addr = %self.addr(),
            payment_url = self.payment_url(),
            database = ?self.backend,
            "listening"
        );
        // The simulator outlives the API's drain: in-flight requests may still call it.
        let provider_stop = CancellationToken::new();
        let provider = self
            .provider
            .map(|(listener, sim)| tokio::spawn(sim.serve(listener, provider_stop.clone())));
        let reconciler = tokio::spawn(self.reconciler.run(shutdown.child_token()));

        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await?;
        tracing::info!("order API drained");
        provider_stop.cancel();
        if let Some(provider) = provider {
            provider.await??;
        }
        reconciler.await?;
        self.state.store.pool().close().await;
        tracing::info!("stopped");
        Ok(())
    }
}
