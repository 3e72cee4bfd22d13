//! The order service: phase 1's API over the transactional outbox, and the saga.
//!
//! * `POST /orders` keeps phase 1's contract (validation, prices, `Idempotency-Key`,
//!   problem+json) but no longer pays inline: in **one transaction** it claims the
//!   key, stores the order (`placed`), adds `OrderPlaced` to the outbox and saves the
//!   response. It answers 202 with `Location`; the order moves on through events.
//!   Because the response is saved in the same transaction, a concurrent duplicate
//!   simply waits on the key's row lock and replays it — phase 1's waiting loop is
//!   not needed.
//! * The **saga**: this service consumes `payments`, `inventory` and `delivery` and
//!   moves the order through the state machine. Each move is written together with
//!   the event announcing it (`OrderPaid`, `OrderConfirmed`, `OrderCancelled`, …) in
//!   the consumer's transaction. `OrderCancelled` triggers the compensations
//!   elsewhere (refund, stock release).

use crate::config::{Publish, Settings};
use crate::consumer::{HandleError, Handler, Transactional};
use crate::events::Envelope;
use crate::flow::{self, Line, OrderPlaced, Service, StatusChanged, Topics, event};
use crate::outbox;
use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::domain::{NewOrder, Order, OrderEvent, OrderStatus};
use common::http::openapi::{JsonBodyProblems, ServerProblems};
use common::http::{ApiJson, HttpLimits, Problem, RequestId, with_standard_layers};
use common::shutdown::CancellationToken;
use phase1_monolith::idempotency::{self, IdempotencyKey};
use phase1_monolith::orders::{OrderError, PlaceOrder, replay_saved, respond};
use phase1_monolith::store::{ApplyError, Inserted, OrderStore};
use rdkafka::producer::FutureProducer;
use sqlx::{Any, AnyPool, Row, Transaction};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub const SERVICE: Service = Service::Order;

/// Logged once an order's transaction committed (`order_id`, `event_id`). Phase 3
/// counts placed orders from this line (`orders_total{status="placed"}`), so both
/// sides use this constant rather than its wording.
pub const LOG_ORDER_PLACED: &str = "order placed; OrderPlaced in the outbox";
/// Logged by `--publish direct` when the event of an order already committed could
/// not be published: that order will never move.
pub const LOG_DIRECT_PUBLISH_FAILED: &str =
    "order committed but OrderPlaced not published (direct publish, no outbox): it is stuck";
/// Logged by the saga for each transition it writes (`order_id`, `from`, `to`); phase
/// 3 counts it once the consumer's transaction commits.
pub const LOG_ORDER_MOVED: &str = "order moved";

/// The orders not final yet: the flows under way that the order relay's
/// [`FlowWindow`](crate::relay::FlowWindow) counts (partial index `orders_open`).
pub const OPEN_ORDERS: &str =
    "SELECT count(*) FROM orders WHERE status NOT IN ('delivered', 'cancelled')";

/// Phase 1's migrations (menu, orders, idempotency keys) plus the saga column.
pub fn migrators() -> Vec<sqlx::migrate::Migrator> {
    vec![
        phase1_monolith::startup::migrator(),
        common::embed_migrations!(
            "migrations/order",
            ["800001_saga.sql", "800002_open_orders.sql"]
        ),
    ]
}

#[derive(Clone)]
pub struct OrderApi {
    store: OrderStore,
    topics: Arc<Topics>,
    /// `--publish direct`: the producer `OrderPlaced` goes to after the commit,
    /// instead of the outbox (the dual write, kept to be seen failing).
    direct: Option<FutureProducer>,
    /// The page at `GET /`, with the notification service's port filled in.
    page: axum::body::Bytes,
}

impl std::fmt::Debug for OrderApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderApi")
            .field("store", &self.store)
            .field("topics", &self.topics)
            .field("direct", &self.direct.is_some())
            .finish()
    }
}

impl FromRef<OrderApi> for OrderStore {
    fn from_ref(api: &OrderApi) -> OrderStore {
        api.store.clone()
    }
}

pub fn router(api: OrderApi, limits: HttpLimits) -> Router {
    let (routes, _doc) = routes();
    with_standard_layers(routes.with_state(api), limits)
}

/// The routes and their OpenAPI document (`GET /openapi.json`, checked in as
/// `openapi/order.json`): phase 1's menu and order lookup, reused as they are, and a
/// `POST /orders` that answers 202 because the order now moves through events.
pub fn routes() -> (Router<OrderApi>, utoipa::openapi::OpenApi) {
    let routes = OpenApiRouter::new()
        .routes(routes!(phase1_monolith::orders::menu))
        .routes(routes!(place_order))
        .routes(routes!(phase1_monolith::orders::get_order))
        .routes(routes!(common::http::health))
        .routes(routes!(ready))
        .routes(routes!(index));
    common::http::openapi::serve(
        routes,
        "FerrisEats phase 2: order API",
        "Phase 1's API over a transactional outbox: `POST /orders` stores the order and its \
         `OrderPlaced` event in one transaction and answers 202; payment, stock and delivery \
         follow as events (watch them on the notification service's WebSocket). Every error \
         is application/problem+json.",
    )
}

/// The page to watch orders move (`static/index.html`): the menu, a button to order,
/// and each order's status pushed live by the notification service on `live_port`
/// (its host is the page's own, so the page works on whatever address it was
/// opened at). No build step: the file is served as written.
pub fn page(live_port: u16) -> String {
    include_str!("../../static/index.html").replace("{{LIVE_PORT}}", &live_port.to_string())
}

/// A page to watch orders move through the services, live.
#[utoipa::path(get, path = "/", tag = "page",
    responses((status = 200, description = "An HTML page: order, then watch the order's status change live", body = String, content_type = "text/html")))]
async fn index(State(api): State<OrderApi>) -> axum::response::Html<axum::body::Bytes> {
    axum::response::Html(api.page)
}

/// Place an order: stored with its `OrderPlaced` event in one transaction; the rest
/// happens through events, so the answer is always 202 (poll `Location`).
#[utoipa::path(post, path = "/orders", tag = "orders",
    params(idempotency::IdempotencyHeader),
    request_body = PlaceOrder,
    responses(
        (status = 202, description = "Stored (`placed`), `OrderPlaced` in the outbox; poll `Location`", body = Order,
            headers(("location" = String, description = "`/orders/{id}`")),
            links(("GetOrder" = (operation_id = "get_order", parameters(("id" = "$response.body#/id")), description = "The order just placed")))),
        JsonBodyProblems,
        (status = 422, description = "Invalid order: unknown sku, a sku twice, a bad field; or an Idempotency-Key reused with a different body", body = Problem, content_type = "application/problem+json"),
        ServerProblems,
    ))]
async fn place_order(
    State(api): State<OrderApi>,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PlaceOrder>,
) -> Result<Response, OrderError> {
    let key = IdempotencyKey::from_headers(&headers)?;
    let menu = api.store.menu().await?;
    let new_order = NewOrder::price(request.customer_id.clone(), &request.items, &menu)?;
    let fingerprint = serde_json::to_string(&request)?;
    let claim = key.as_ref().map(|k| (k.as_str(), fingerprint.as_str()));

    let mut tx = api.store.pool().begin().await?;
    match OrderStore::insert_in(&mut tx, &new_order, claim).await? {
        Inserted::Created(order) => {
            let placed = Envelope::new(
                event::ORDER_PLACED,
                order.id,
                &request_id,
                serde_json::to_value(order_placed(&order))?,
            );
            if api.direct.is_none() {
                outbox::enqueue(&mut tx, &api.topics.orders, &placed).await?;
            }
            let (status, body) = respond(&order);
            if let Some(key) = &key {
                idempotency::save_response(&mut *tx, key.as_str(), status, &body.0).await?;
            }
            tx.commit().await?;
            if let Some(producer) = &api.direct {
                // The dual write: the order is committed, the event may never be. The
                // client is told "created" either way — what the outbox prevents.
                if let Err(err) = crate::kafka::publish(producer, &api.topics.orders, &placed).await
                {
                    tracing::error!(order_id = %order.id, error = %format!("{err:#}"), "{}", LOG_DIRECT_PUBLISH_FAILED);
                }
            }
            tracing::info!(order_id = %order.id, event_id = %placed.event_id, "{}", LOG_ORDER_PLACED);
            Ok((status, body).into_response())
        }
        Inserted::KeyAlreadyUsed => {
            tx.rollback().await?;
            let key = key.ok_or_else(|| anyhow::anyhow!("no key, no conflict"))?;
            let saved = idempotency::load(api.store.pool(), key.as_str())
                .await?
                .ok_or_else(|| anyhow::anyhow!("idempotency key vanished"))?;
            replay_saved(&saved, &key, &fingerprint)?.ok_or_else(|| {
                // Impossible here: the response is saved in the order's transaction.
                OrderError::Unexpected(anyhow::anyhow!("key claimed without a response"))
            })
        }
    }
}

fn order_placed(order: &Order) -> OrderPlaced {
    OrderPlaced {
        status: OrderStatus::Placed,
        customer_id: order.customer_id.as_str().to_owned(),
        total_cents: order.total_cents.get(),
        items: order
            .items
            .iter()
            .map(|line| Line {
                sku: line.sku.as_str().to_owned(),
                qty: i64::from(line.qty.get()),
            })
            .collect(),
    }
}

/// Orders that became final since `$1` (a timestamp): index `orders_status_updated_at`
/// reads only the recent ones.
pub const FINISHED_SINCE: &str = "SELECT count(*) FROM orders \
     WHERE status IN ('delivered', 'cancelled') AND updated_at > $1";
/// How far back `/ready`'s `finished_per_second` looks, in seconds.
pub const FINISH_WINDOW_SECONDS: i64 = 5;

/// What the order API's `/ready` says besides "ready": how the pipeline is doing.
/// Phase 4's gateway reads it to decide whether to let new orders in.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Readiness {
    pub status: String,
    /// Events committed and not yet published.
    pub outbox_backlog: i64,
    /// How long the oldest of them has waited (0 when none): under overload the flow
    /// window keeps new orders there.
    pub outbox_oldest_age_seconds: f64,
    /// Orders accepted and not final yet ([`OPEN_ORDERS`]): the flows under way,
    /// wherever they wait.
    pub open_orders: i64,
    /// Orders that became final per second, over the last [`FINISH_WINDOW_SECONDS`]: the
    /// pipeline's throughput, measured where it ends.
    pub finished_per_second: f64,
}

async fn readiness(pool: &AnyPool) -> anyhow::Result<Readiness> {
    let backlog = outbox::backlog_of(pool).await?;
    let age = backlog
        .oldest
        .as_deref()
        .and_then(|oldest| common::db::parse_timestamp(oldest).ok())
        .map_or(0.0, |oldest| {
            (common::db::now() - oldest).as_seconds_f64().max(0.0)
        });
    let open_orders: i64 = sqlx::query_scalar(OPEN_ORDERS).fetch_one(pool).await?;
    let since = common::db::now() - chrono::TimeDelta::seconds(FINISH_WINDOW_SECONDS);
    let finished: i64 = sqlx::query_scalar(FINISHED_SINCE)
        .bind(common::db::timestamp(since))
        .fetch_one(pool)
        .await?;
    Ok(Readiness {
        status: "ready".to_owned(),
        outbox_backlog: backlog.events,
        outbox_oldest_age_seconds: age,
        open_orders,
        finished_per_second: finished as f64 / FINISH_WINDOW_SECONDS as f64,
    })
}

/// Ready when the database answers, with the pipeline's [`Readiness`]: Little's law
/// on these two numbers (`open_orders / finished_per_second`) is how long a new order
/// can expect to take, end to end — phase 4's gateway admits new orders while that
/// stays under its target.
#[utoipa::path(get, path = "/ready", tag = "health",
    responses(
        (status = 200, description = "Ready, with the pipeline's figures", body = Readiness),
        (status = 503, description = "The order database is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn ready(State(api): State<OrderApi>) -> Response {
    match readiness(api.store.pool()).await {
        Ok(readiness) => axum::Json(readiness).into_response(),
        Err(err) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "Order database unavailable",
        )
        .detail(format!("{err:#}"))
        .into_response(),
    }
}

/// The saga: payment, inventory and delivery events move the order.
#[derive(Debug, Clone)]
pub struct Saga {
    topics: Arc<Topics>,
}

impl Handler for Saga {
    fn wants(&self, event_type: &str) -> bool {
        transition(event_type).is_some()
    }

    async fn handle(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &Envelope,
    ) -> Result<(), HandleError> {
        let Some(transition) = transition(&event.event_type) else {
            return Ok(());
        };
        // Lock the order: its events arrive on three topics, possibly at once.
        let row = sqlx::query("SELECT stock_reserved_at FROM orders WHERE id = $1 FOR UPDATE")
            .bind(event.order_id.to_string())
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| {
                HandleError::Permanent(format!("no order {} in the order database", event.order_id))
            })?;
        let stock_reserved = row
            .try_get::<Option<String>, _>("stock_reserved_at")?
            .is_some();
        let order = OrderStore::get_in(tx, event.order_id)
            .await
            .map_err(HandleError::Transient)?
            .ok_or_else(|| HandleError::Permanent(format!("order {} vanished", event.order_id)))?;

        match transition {
            OrderEvent::PaymentSucceeded => {
                let paid: flow::PaymentCompleted = event.decode()?;
                let order = self
                    .step(tx, event, order, transition, Some(&paid.charge_id))
                    .await?;
                // Stock answered first: the order can be confirmed right away.
                if stock_reserved && order.status == OrderStatus::Paid {
                    self.step(tx, event, order, OrderEvent::StockReserved, None)
                        .await?;
                }
            }
            OrderEvent::StockReserved if order.status == OrderStatus::Placed => {
                sqlx::query("UPDATE orders SET stock_reserved_at = $1 WHERE id = $2")
                    .bind(common::db::timestamp(common::db::now()))
                    .bind(order.id.to_string())
                    .execute(&mut **tx)
                    .await?;
                tracing::info!(order_id = %order.id, "stock reserved before payment; waiting for it");
            }
            _ => {
                self.step(tx, event, order, transition, None).await?;
            }
        }
        Ok(())
    }
}

/// The move an event asks of the order, if any.
fn transition(event_type: &str) -> Option<OrderEvent> {
    Some(match event_type {
        event::PAYMENT_COMPLETED => OrderEvent::PaymentSucceeded,
        event::PAYMENT_FAILED => OrderEvent::PaymentFailed,
        event::STOCK_RESERVED => OrderEvent::StockReserved,
        event::OUT_OF_STOCK => OrderEvent::OutOfStock,
        event::DELIVERY_PREPARING => OrderEvent::StartPreparing,
        event::DELIVERY_DISPATCHED => OrderEvent::Dispatch,
        event::DELIVERY_COMPLETED => OrderEvent::Deliver,
        // Compensations done (refund, release): nothing left to move.
        _ => return None,
    })
}

impl Saga {
    /// Applies one transition and writes the event announcing it. A transition the
    /// state machine refuses (e.g. a payment for an order already cancelled for lack
    /// of stock) changes nothing: compensation is already under way.
    async fn step(
        &self,
        tx: &mut Transaction<'static, Any>,
        cause: &Envelope,
        order: Order,
        transition: OrderEvent,
        payment_id: Option<&str>,
    ) -> Result<Order, HandleError> {
        match OrderStore::apply_in(tx, &order, transition, payment_id).await {
            Ok(next) => {
                let announced = cause.caused(
                    flow::status_event(next.status),
                    super::to_json(&StatusChanged {
                        status: next.status,
                        cancellation_reason: next.cancellation_reason,
                    })?,
                );
                super::enqueue(tx, &self.topics.orders, &announced).await?;
                tracing::info!(order_id = %next.id, from = %order.status, to = %next.status, cause = cause.event_type, "{}", LOG_ORDER_MOVED);
                Ok(next)
            }
            Err(ApplyError::Illegal(illegal)) => {
                tracing::info!(order_id = %order.id, %illegal, cause = cause.event_type, "ignored: the order has moved on");
                Ok(order)
            }
            Err(ApplyError::Stale(_)) => Err(HandleError::Transient(anyhow::anyhow!(
                "order {} changed under its row lock",
                order.id
            ))),
            Err(ApplyError::Db(err)) => Err(HandleError::Transient(err)),
        }
    }
}

/// How long `--publish direct` waits for the broker before it gives the event up (a
/// client cannot wait for the 60 s the relay's producer would).
const DIRECT_PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The order service, built and ready to run.
#[derive(Debug)]
pub struct OrderService {
    listener: TcpListener,
    router: Router,
    pool: AnyPool,
    consumer: crate::consumer::EventConsumer<Transactional<Saga>>,
}

impl OrderService {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let pool = super::open_database(
            &settings.order_database_url,
            settings.db_max_connections,
            migrators(),
        )
        .await?;
        let (topics, producer) = super::connect_kafka(settings).await?;
        Self::with(settings, pool, topics, producer).await
    }

    async fn with(
        settings: &Settings,
        pool: AnyPool,
        topics: Topics,
        producer: FutureProducer,
    ) -> anyhow::Result<Self> {
        let topics = Arc::new(topics);
        let direct = match settings.publish {
            Publish::Outbox => None,
            Publish::Direct => {
                tracing::warn!(
                    "ORDER_PUBLISH=direct: OrderPlaced bypasses the outbox (a dual write)"
                );
                Some(crate::kafka::producer_giving_up_after(
                    &settings.brokers,
                    DIRECT_PUBLISH_TIMEOUT,
                )?)
            }
        };
        let api = OrderApi {
            store: OrderStore::new(pool.clone()),
            topics: topics.clone(),
            direct,
            page: page(settings.notification_addr.port()).into(),
        };
        let limits = HttpLimits {
            body_limit: settings.body_limit,
            request_timeout: settings.request_timeout,
        };
        let listener = common::http::listen(settings.addr, "the order API", "--addr").await?;
        let consumer = super::consumer(
            settings,
            &topics,
            SERVICE,
            producer,
            Transactional {
                pool: pool.clone(),
                handler: Saga {
                    topics: topics.clone(),
                },
            },
        );
        Ok(OrderService {
            listener,
            router: router(api, limits),
            pool,
            consumer,
        })
    }

    /// Wraps the order API's router, e.g. in more middleware (phase 3 adds metrics and
    /// its planned incidents this way, without touching the handlers).
    pub fn map_router(mut self, wrap: impl FnOnce(Router) -> Router) -> Self {
        self.router = wrap(self.router);
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Serves the API and runs the saga consumer until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.addr(), "order API listening");
        let saga = tokio::spawn(super::supervise_consumer(self.consumer, shutdown.clone()));
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await?;
        saga.await?;
        self.pool.close().await;
        Ok(())
    }
}
