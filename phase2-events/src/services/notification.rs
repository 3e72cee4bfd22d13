//! The notification service: tells customers what happened to their order — best
//! effort, at most once, and never in the order flow's way.
//!
//! * It is a separate consumer group on `orders`: if it is slow or down, orders still
//!   get paid, confirmed and delivered; it catches up later from its committed offset.
//! * **At most once, with Redis.** Its effect (a message to a customer) is not in a
//!   database, so the `processed_events` trick does not apply. Instead it claims the
//!   event with `SET notified:<event_id> NX EX 7d` *before* sending: a redelivered
//!   event finds the key and is skipped. (Claim-then-send loses a notification if the
//!   process dies in between; send-then-claim would duplicate one. For a "your food
//!   is on its way" message, losing one now and then is the lesser evil.)
//! * Every notification sent is appended to a Redis list (the "outbox" of a real SMS
//!   or push gateway), which the scenario checkers read.
//! * **Live status over WebSocket**: `GET /orders/{id}/live` sends the order's status
//!   now and each change as it happens, then closes when the order is final. Changes
//!   travel through Redis pub/sub, so a client connected to one instance hears about
//!   events consumed by another.

use crate::config::Settings;
use crate::consumer::{Effect, EventConsumer, Verdict};
use crate::events::Envelope;
use crate::flow::{Service, StatusChanged, Topics};
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::domain::{OrderId, OrderStatus};
use common::http::{HttpLimits, Problem, with_standard_layers};
use common::shutdown::CancellationToken;
use futures::StreamExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

pub const SERVICE: Service = Service::Notification;

/// How long a claimed event id is remembered (longer than any redelivery).
const DEDUP_SECONDS: u64 = 7 * 24 * 3600;

/// Redis key names, prefixed by the namespace.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(topics: &Topics) -> Keys {
        Keys {
            prefix: format!("ferriseats:{}", topics.namespaced(SERVICE.name())),
        }
    }
    fn notified(&self, event_id: &str) -> String {
        format!("{}:notified:{event_id}", self.prefix)
    }
    /// The list of every notification sent.
    pub fn sent(&self) -> String {
        format!("{}:sent", self.prefix)
    }
    fn status(&self) -> String {
        format!("{}:status", self.prefix)
    }
    fn live(&self, order_id: &str) -> String {
        format!("{}:live:{order_id}", self.prefix)
    }
}

/// One notification, as sent (and as pushed over WebSocket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub event_id: String,
    pub order_id: String,
    #[serde(flatten)]
    pub change: StatusChanged,
    /// The flow's correlation id: the `x-request-id` of the `POST /orders`.
    #[serde(default)]
    pub request_id: String,
    /// The flow's trace id when tracing is on (phase 3): find the whole order in the
    /// trace viewer with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

#[derive(Clone)]
pub struct Notifier {
    redis: ConnectionManager,
    keys: Keys,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Effect for Notifier {
    async fn apply(&self, _consumer: &str, event: &Envelope) -> anyhow::Result<Verdict> {
        let Ok(change) = serde_json::from_value::<StatusChanged>(event.payload.clone()) else {
            return Ok(Verdict::DeadLetter(format!(
                "{} has no order status to notify",
                event.event_type
            )));
        };
        let mut redis = self.redis.clone();
        let event_id = event.event_id.to_string();
        let claim_key = self.keys.notified(&event_id);
        let claimed: Result<Option<String>, _> = redis::cmd("SET")
            .arg(&claim_key)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(DEDUP_SECONDS)
            .query_async(&mut redis)
            .await;
        match claimed {
            Err(err) => return Ok(Verdict::Retry(format!("redis: {err}"))),
            Ok(None) => return Ok(Verdict::Duplicate),
            Ok(Some(_)) => {}
        }
        let order_id = event.order_id.to_string();
        let notification = Notification {
            event_id,
            order_id: order_id.clone(),
            change,
            request_id: event.correlation_id.clone(),
            trace_id: event.trace_id().map(str::to_owned),
        };
        let text = serde_json::to_string(&notification)?;
        let sent: Result<(), _> = redis::pipe()
            .rpush(self.keys.sent(), &text)
            .ignore()
            .hset(self.keys.status(), &order_id, &text)
            .ignore()
            .publish(self.keys.live(&order_id), &text)
            .ignore()
            .query_async(&mut redis)
            .await;
        if let Err(err) = sent {
            // Not sent: give the claim back so the retry can send it.
            let _: Result<(), _> = redis.del(&claim_key).await;
            return Ok(Verdict::Retry(format!("redis: {err}")));
        }
        tracing::info!(order_id, status = %notification.change.status, "notification sent");
        Ok(Verdict::Applied)
    }
}

#[derive(Clone)]
struct Live {
    client: redis::Client,
    redis: ConnectionManager,
    keys: Keys,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

pub fn router(live: Arc<LiveState>, limits: HttpLimits) -> Router {
    let routes = Router::new()
        .route("/orders/{id}/live", get(live_status))
        .route("/health", get(|| async { "ok" }))
        .with_state(live);
    with_standard_layers(routes, limits)
}

/// What the WebSocket handler needs (opaque outside this module).
#[derive(Debug)]
pub struct LiveState(Live);

async fn live_status(
    State(live): State<Arc<LiveState>>,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Ok(order_id) = id.parse::<OrderId>() else {
        return Problem::new(StatusCode::NOT_FOUND, "order-not-found", "Order not found")
            .detail(format!("{id} is not an order id"))
            .into_response();
    };
    let live = live.0.clone();
    upgrade.on_upgrade(move |socket| async move {
        if let Err(err) = stream_status(live, order_id.to_string(), socket).await {
            tracing::info!(%order_id, error = format!("{err:#}"), "live status stream ended");
        }
    })
}

/// Subscribe first, then send the current status, so no change falls in between.
async fn stream_status(live: Live, order_id: String, mut socket: WebSocket) -> anyhow::Result<()> {
    let mut pubsub = live.client.get_async_pubsub().await?;
    pubsub.subscribe(live.keys.live(&order_id)).await?;
    let mut redis = live.redis.clone();
    let current: Option<String> = redis.hget(live.keys.status(), &order_id).await?;
    // Only ever forward: the snapshot may already be newer than a message still
    // queued on the subscription. Statuses are ranked in state machine order.
    let rank = |status: OrderStatus| OrderStatus::ALL.iter().position(|s| *s == status);
    let mut last_rank = None;
    let mut messages = pubsub.on_message();
    let mut next = current;
    loop {
        if let Some(text) = next.take() {
            let notification: Notification = serde_json::from_str(&text)?;
            let status = notification.change.status;
            if rank(status) > last_rank {
                socket.send(Message::Text(text.into())).await?;
                last_rank = rank(status);
                if status.is_final() {
                    socket.send(Message::Close(None)).await?;
                    return Ok(());
                }
            }
        }
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { return Ok(()) };
                next = Some(message.get_payload()?);
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The notification service, built and ready to run.
#[derive(Debug)]
pub struct NotificationService {
    listener: TcpListener,
    router: Router,
    consumer: EventConsumer<Notifier>,
}

/// Connects to Redis, failing at once with the one line naming Redis, its address and
/// `cargo xtask up` when it is not there.
pub async fn connect_redis(url: &str) -> anyhow::Result<(redis::Client, ConnectionManager)> {
    let redis = &common::endpoints::REDIS;
    common::unreachable::check(redis, url).await?;
    let client = redis::Client::open(url)?;
    let manager = ConnectionManager::new(client.clone())
        .await
        .map_err(|err| redis.unreachable(redis.address(url)).because(err))?;
    Ok((client, manager))
}

impl NotificationService {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let (client, redis) = connect_redis(&settings.redis_url).await?;
        let (topics, producer) = super::connect_kafka(settings).await?;
        let keys = Keys::new(&topics);
        let consumer = super::consumer(
            settings,
            &topics,
            SERVICE,
            producer,
            Notifier {
                redis: redis.clone(),
                keys: keys.clone(),
            },
        );
        let listener = common::http::listen(
            settings.notification_addr,
            "the notification service",
            "--notification-addr",
        )
        .await?;
        let limits = HttpLimits {
            body_limit: settings.body_limit,
            request_timeout: settings.request_timeout,
        };
        let live = Arc::new(LiveState(Live {
            client,
            redis,
            keys,
        }));
        Ok(NotificationService {
            listener,
            router: router(live, limits),
            consumer,
        })
    }

    /// Wraps the notification service's router, e.g. in more middleware (phase 3 adds metrics and
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

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.addr(), "notification service listening (WebSocket /orders/{{id}}/live)");
        let consumer = tokio::spawn(super::supervise_consumer(self.consumer, shutdown.clone()));
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await?;
        consumer.await?;
        Ok(())
    }
}
