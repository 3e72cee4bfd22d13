//! The gateway: the only door for clients (127.0.0.1:3000, where learners have sent
//! their requests since phase 1). It decides who may come in, and how often, before
//! anything reaches the order API behind it.
//!
//! | concern | where |
//! |---|---|
//! | who is calling: HS256 JWTs, 401 problem+json | [`auth`] |
//! | how often: GCRA in Redis, shared by every replica; 429 with `Retry-After`, `RateLimit`, `RateLimit-Policy` | [`gcra`], [`Gateway::limit`] |
//! | which way it fails when Redis is down (open, by default, and why) | [`OnRedisError`] |
//! | load shedding: a bounded number in flight, a cheap 503 beyond it, writes shed before reads | `Gateway::admit` |
//! | admission control on the pipeline's own signals (orders under way, orders finished per second): Little's law | `Gateway::watch_the_pipeline`, `Gateway::admit` |
//! | forwarding to the order API, the customer taken from the token | `Gateway::forward` |
//! | two or more order API replicas: health checks, a circuit breaker each | [`upstream`] |
//! | `/health`, `/ready`, `/metrics` on the ops port | [`ops_router`] |
//!
//! Authenticated requests are limited per customer; anonymous ones (`GET /menu`
//! without a token) per client IP. A limit per IP on authenticated traffic would put
//! every customer behind one office NAT — or every virtual customer of a local load
//! test on 127.0.0.1 — into one bucket.

pub mod auth;
pub mod gcra;
pub mod upstream;

use anyhow::Context;
use auth::{Customer, Keys};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRef, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::http::{HttpLimits, Problem, with_standard_layers};
use common::shutdown::CancellationToken;
use gcra::{Decision, Gcra, Quota};
use phase2_events::services::order::Readiness;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Where phase 4 runs the order API (phase 1–3 ran it on 3000, now the gateway's).
pub const DEFAULT_UPSTREAM: &str = "http://127.0.0.1:3100";

/// Where the gateway listens and what it protects.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewaySettings {
    /// Where clients connect.
    #[arg(long, env = "GATEWAY_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,
    /// `/health`, `/ready` and `/metrics`.
    #[arg(long, env = "GATEWAY_OPS_ADDR", default_value = "127.0.0.1:9410")]
    pub ops_addr: SocketAddr,
    /// The order API replicas behind the gateway (comma-separated base URLs).
    #[arg(
        long = "upstream",
        env = "GATEWAY_UPSTREAMS",
        value_delimiter = ',',
        default_value = DEFAULT_UPSTREAM
    )]
    pub upstreams: Vec<String>,
    /// Where the rate limits are kept (shared by every gateway replica).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// The HS256 key tokens are signed with (at least 32 bytes). The default is a
    /// development key: never use it beyond a laptop.
    #[arg(long, env = "GATEWAY_JWT_KEY", default_value = auth::DEVELOPMENT_KEY, hide_default_value = true)]
    pub jwt_key: String,
    /// Requests per second each customer may make, sustained.
    #[arg(long, env = "GATEWAY_CUSTOMER_RATE", default_value_t = 20.0)]
    pub customer_rate: f64,
    /// Requests each customer may make at once, above the rate.
    #[arg(long, env = "GATEWAY_CUSTOMER_BURST", default_value_t = 40)]
    pub customer_burst: u32,
    /// Anonymous requests per second from one client IP, sustained.
    #[arg(long, env = "GATEWAY_IP_RATE", default_value_t = 50.0)]
    pub ip_rate: f64,
    /// Anonymous requests from one client IP at once, above the rate.
    #[arg(long, env = "GATEWAY_IP_BURST", default_value_t = 100)]
    pub ip_burst: u32,
    /// Which way the rate limiter fails when Redis does not answer.
    #[arg(long, env = "GATEWAY_ON_REDIS_ERROR", value_enum, default_value_t = OnRedisError::Open)]
    pub on_redis_error: OnRedisError,
    /// How long the rate limiter waits for Redis before it counts as down.
    #[arg(long, env = "GATEWAY_REDIS_TIMEOUT", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub redis_timeout: Duration,
    /// Switch rate limiting off (to see what it prevents).
    #[arg(long, env = "GATEWAY_NO_RATE_LIMIT")]
    pub no_rate_limit: bool,
    /// Requests forwarded at once at most; beyond it the gateway answers 503 at once
    /// instead of queueing. Order writes may use three quarters of it: the last
    /// quarter is kept for reads (menu, order status).
    #[arg(long, env = "GATEWAY_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,
    /// Admission control: how long, on average, a new order may take from accepted
    /// to final. By Little's law (orders under way = rate × time), the gateway admits
    /// new orders while fewer than `order_target × orders finished per second` are
    /// under way; the order API's `/ready` reports both numbers.
    #[arg(long, env = "GATEWAY_ORDER_TARGET", default_value = "1s", value_parser = humantime::parse_duration)]
    pub order_target: Duration,
    /// Admission control: new orders are always admitted while fewer than this are
    /// under way (an idle pipeline finishes nothing, so it has no rate to go by).
    #[arg(long, env = "GATEWAY_MIN_OPEN_ORDERS", default_value_t = 64)]
    pub min_open_orders: i64,
    /// How often the pipeline's signals are read (the order API's `/ready`).
    #[arg(long, env = "GATEWAY_ADMISSION_INTERVAL", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub admission_interval: Duration,
    /// Switch load shedding and admission control off (to see what they prevent).
    #[arg(long, env = "GATEWAY_NO_SHEDDING")]
    pub no_shedding: bool,
    /// How often each order API replica's `/ready` is checked.
    #[arg(long, env = "GATEWAY_HEALTH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,
    /// Let every replica have its turn, up or down: the rotation ignores the health
    /// checks and the circuit breakers (to see what they prevent).
    #[arg(long, env = "GATEWAY_NO_BREAKER")]
    pub no_breaker: bool,
    /// Share `addr` with other gateway replicas (`SO_REUSEPORT`): the kernel spreads
    /// new connections among the processes listening, and stops sending them to one
    /// that died — a load balancer in one socket option.
    #[arg(long, env = "GATEWAY_REUSE_PORT")]
    pub reuse_port: bool,
    /// How long a forwarded request may take.
    #[arg(long, env = "GATEWAY_UPSTREAM_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,
}

impl GatewaySettings {
    fn customer_quota(&self) -> Quota {
        Quota {
            per_second: self.customer_rate,
            burst: self.customer_burst,
        }
    }

    fn ip_quota(&self) -> Quota {
        Quota {
            per_second: self.ip_rate,
            burst: self.ip_burst,
        }
    }
}

/// When Redis does not answer, let requests through (`open`) or refuse them with
/// 503 (`closed`).
///
/// Open is the default. The rate limit is about *fairness* — one customer must not
/// take everybody's share — not about *capacity*: load shedding protects capacity,
/// locally, without Redis. Failing closed would turn a Redis outage into an outage of
/// the whole platform, a cascade from a part that is not even on the order path.
/// Closed is for limits that protect money or abuse (logins, payouts), where letting
/// everything through is the worse failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnRedisError {
    Open,
    Closed,
}

impl OnRedisError {
    fn as_str(self) -> &'static str {
        match self {
            OnRedisError::Open => "open",
            OnRedisError::Closed => "closed",
        }
    }
}

/// Which limit a request is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Customer,
    Ip,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Customer => "customer",
            Policy::Ip => "ip",
        }
    }
}

/// What the gateway did with a request: `gateway_requests_total{route, outcome}`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelValue,
)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    forwarded,
    unauthorized,
    rate_limited,
    limiter_unavailable,
    shed,
    bad_request,
    upstream_error,
}

/// Why a request was shed: `gateway_shed_total{reason}`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelValue,
)]
#[allow(non_camel_case_types)]
pub enum ShedReason {
    /// Too many requests in flight at the gateway.
    concurrency,
    /// The pipeline is behind: new orders wait (admission control).
    pipeline,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ShedLabels {
    reason: ShedReason,
}

/// Reads may use every slot; writes only this share, so that reads are served
/// while writes are shed.
const WRITE_SHARE: (usize, usize) = (3, 4);

/// What a request does to the system: writes are shed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    outcome: Outcome,
}

/// The gateway's metrics, on its ops port. The gauges are also the state they show
/// (requests in flight, admission's verdict, Redis failing): one number, not two kept
/// in step.
#[derive(Debug, Clone, Default)]
pub struct GatewayMetrics {
    requests: Family<RequestLabels, Counter>,
    limiter_errors: Counter,
    limiter_failing: Gauge,
    shed: Family<ShedLabels, Counter>,
    in_flight: Gauge,
    admitting_orders: Gauge,
    order_limit: Gauge,
    order_budget: Gauge,
}

impl GatewayMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "gateway_requests",
            "Requests by route and what the gateway did with them",
            self.requests.clone(),
        );
        registry.register(
            "gateway_rate_limiter_errors",
            "Rate-limit checks that Redis did not answer in time",
            self.limiter_errors.clone(),
        );
        registry.register(
            "gateway_rate_limiter_failing",
            "1 while the rate limiter cannot reach Redis (requests then pass if it fails open, or get 503 if closed)",
            self.limiter_failing.clone(),
        );
        registry.register(
            "gateway_shed",
            "Requests answered 503 without being forwarded, by reason",
            self.shed.clone(),
        );
        registry.register(
            "gateway_in_flight",
            "Requests being forwarded right now",
            self.in_flight.clone(),
        );
        registry.register(
            "gateway_admitting_orders",
            "1 if the last reading of the pipeline left room for new orders, 0 if admission control sheds them until the next one",
            self.admitting_orders.clone(),
        );
        registry.register(
            "gateway_order_limit",
            "Orders admission control lets be under way at once: the target time × orders finished per second (Little's law)",
            self.order_limit.clone(),
        );
        registry.register(
            "gateway_order_budget",
            "New orders this gateway may still admit before the pipeline is read again",
            self.order_budget.clone(),
        );
    }

    fn count(&self, route: &'static str, outcome: Outcome) {
        self.requests
            .get_or_create(&RequestLabels { route, outcome })
            .inc();
    }
}

/// The gateway's shared state.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: GatewaySettings,
    keys: Arc<Keys>,
    gcra: Gcra,
    redis: Option<redis::aio::ConnectionManager>,
    http: reqwest::Client,
    replicas: upstream::Replicas,
    metrics: GatewayMetrics,
    registry: Registry,
}

/// A request's slot; released when the answer is ready (or the request dropped).
struct InFlight(Arc<Inner>);

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlight")
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

impl FromRef<Gateway> for Arc<Keys> {
    fn from_ref(gateway: &Gateway) -> Arc<Keys> {
        gateway.inner.keys.clone()
    }
}

impl Gateway {
    /// Connects to Redis (unless rate limiting is off) and prepares the HTTP client.
    pub async fn new(settings: GatewaySettings) -> anyhow::Result<Gateway> {
        anyhow::ensure!(
            settings.jwt_key.len() >= 32,
            "GATEWAY_JWT_KEY must be at least 32 bytes for HS256 (it has {})",
            settings.jwt_key.len()
        );
        anyhow::ensure!(
            !settings.upstreams.is_empty(),
            "at least one --upstream is needed"
        );
        let redis = if settings.no_rate_limit {
            None
        } else {
            // Fails at once, in one line, when nothing listens (the manager would retry).
            const WITHOUT: &str = "or pass --no-rate-limit to run without rate limits";
            let redis = &common::endpoints::REDIS;
            common::unreachable::check(redis, &settings.redis_url)
                .await
                .map_err(|err| err.or(WITHOUT))?;
            let client = redis::Client::open(settings.redis_url.as_str())
                .with_context(|| format!("bad REDIS_URL {}", settings.redis_url))?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(settings.redis_timeout));
            let manager = redis::aio::ConnectionManager::new_with_config(client, config)
                .await
                .map_err(|err| {
                    let address = redis.address(&settings.redis_url);
                    redis.unreachable(address).because(err).or(WITHOUT)
                })?;
            Some(manager)
        };
        let http = reqwest::Client::builder()
            .timeout(settings.upstream_timeout)
            .pool_max_idle_per_host(256)
            .build()?;
        let metrics = GatewayMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let replicas = upstream::Replicas::new(&settings.upstreams, settings.no_breaker);
        replicas.register(&mut registry);
        metrics.admitting_orders.set(1);
        metrics.order_limit.set(settings.min_open_orders);
        metrics.order_budget.set(settings.min_open_orders);
        Ok(Gateway {
            inner: Arc::new(Inner {
                keys: Arc::new(Keys::hs256(settings.jwt_key.as_bytes())?),
                settings,
                gcra: Gcra::default(),
                redis,
                http,
                replicas,
                metrics,
                registry,
            }),
        })
    }

    pub fn keys(&self) -> Arc<Keys> {
        self.inner.keys.clone()
    }

    pub fn metrics(&self) -> &GatewayMetrics {
        &self.inner.metrics
    }

    /// The client-facing routes.
    pub fn router(&self) -> Router {
        let (routes, _doc) = routes();
        with_standard_layers(
            routes.with_state(self.clone()),
            HttpLimits {
                body_limit: 64 * 1024,
                request_timeout: self.inner.settings.upstream_timeout + Duration::from_secs(1),
            },
        )
    }

    /// Serves clients and the ops port until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let settings = &self.inner.settings;
        // phase 1–3's `all` listen on 3000 too: the usual reason it is taken.
        let listener = listen(settings.addr, settings.reuse_port).map_err(|err| {
            common::http::listen::bind_error(&err, settings.addr, "the gateway", "--addr")
        })?;
        let ops =
            common::http::listen(settings.ops_addr, "the gateway's ops port", "--ops-addr").await?;
        self.serve(listener, ops, shutdown).await
    }

    /// [`run`](Self::run) on listeners the caller bound (tests bind port 0).
    pub async fn serve(
        self,
        listener: TcpListener,
        ops: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        tracing::info!(
            addr = %listener.local_addr()?,
            ops = %ops.local_addr()?,
            upstreams = ?self.inner.settings.upstreams,
            rate_limit = !self.inner.settings.no_rate_limit,
            on_redis_error = self.inner.settings.on_redis_error.as_str(),
            "gateway listening"
        );
        if !self.inner.settings.no_shedding {
            tokio::spawn(self.clone().watch_the_pipeline(shutdown.clone()));
        }
        // Always checked (the gauges, and the gateway's own `/ready`, say what the
        // replicas do); `--no-breaker` only stops the rotation from listening.
        tokio::spawn(self.clone().check_replicas(shutdown.clone()));
        let ops_server = axum::serve(ops, ops_router(self.clone()))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let server = axum::serve(
            listener,
            self.router()
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned());
        let (served, ops_served) = tokio::join!(server, ops_server);
        served?;
        ops_served?;
        Ok(())
    }

    /// Load shedding: a slot for this request, or a cheap 503 now. Never a queue: a
    /// request that waits for a slot holds its client, its connection and its memory
    /// while the latency it will see grows past any use (tower's `ConcurrencyLimit`
    /// waits; `LoadShed` in front of it refuses instead, which is what this does).
    fn admit(&self, route: &'static str, kind: Kind) -> Result<InFlight, Box<Response>> {
        let inner = &self.inner;
        let shed = |reason: ShedReason, retry_after: u64, detail: &str| {
            inner.metrics.count(route, Outcome::shed);
            inner
                .metrics
                .shed
                .get_or_create(&ShedLabels { reason })
                .inc();
            let mut response = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "The platform is overloaded",
            )
            .detail(detail)
            .with("reason", format!("{reason:?}"))
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            Box::new(response)
        };
        let shedding = !inner.settings.no_shedding;
        // Each new order takes one from the budget the last reading left; none left,
        // and it waits for the pipeline to finish some (the next reading).
        if shedding && kind == Kind::Write && inner.metrics.order_budget.dec() <= 0 {
            inner.metrics.order_budget.inc();
            return Err(shed(
                ShedReason::pipeline,
                1,
                "new orders wait: the order pipeline is at its pace (reads are still served)",
            ));
        }
        let limit = match kind {
            Kind::Read => inner.settings.max_in_flight,
            Kind::Write => inner.settings.max_in_flight * WRITE_SHARE.0 / WRITE_SHARE.1,
        };
        let before = usize::try_from(inner.metrics.in_flight.inc()).unwrap_or(0);
        let slot = InFlight(self.inner.clone());
        if shedding && before >= limit {
            drop(slot);
            return Err(shed(
                ShedReason::concurrency,
                1,
                "too many requests in flight at the gateway",
            ));
        }
        Ok(slot)
    }

    /// Admission control, by Little's law: orders under way = the rate they finish at
    /// × the time each takes. Every `admission_interval` the gateway reads both
    /// numbers from an order API replica's `/ready`; for new orders to take
    /// `order_target` on average, at most `limit = order_target × finished per
    /// second` may be under way, so it admits `limit − under way` more until the next
    /// reading (a budget [`Gateway::admit`] spends). Under overload that admits new
    /// orders at the pace the pipeline finishes them — the rest get a cheap 503 at the
    /// door instead of a place in a queue that only makes every order late.
    async fn watch_the_pipeline(self, shutdown: CancellationToken) {
        let inner = &self.inner;
        let target = inner.settings.order_target.as_secs_f64();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(inner.settings.admission_interval) => {}
            }
            let Some(pipeline) = self.readiness().await else {
                continue; // no replica answered: the breaker's business, not this one's
            };
            let limit = ((target * pipeline.finished_per_second).round() as i64)
                .max(inner.settings.min_open_orders);
            let budget = (limit - pipeline.open_orders).max(0);
            inner.metrics.order_limit.set(limit);
            inner.metrics.order_budget.set(budget);
            let now_admitting = budget > 0;
            // Logged once per change, not once per reading.
            let admitting = inner.metrics.admitting_orders.set(i64::from(now_admitting)) == 1;
            if now_admitting != admitting {
                if now_admitting {
                    tracing::info!(
                        open_orders = pipeline.open_orders,
                        limit,
                        "admission control: room for new orders again"
                    );
                } else {
                    tracing::warn!(
                        open_orders = pipeline.open_orders,
                        finished_per_second = pipeline.finished_per_second,
                        limit,
                        "admission control: the pipeline is full; new orders get 503 until it finishes some, reads are still served"
                    );
                }
            }
        }
    }

    /// The health checks of [`upstream`], every `health_interval`.
    async fn check_replicas(self, shutdown: CancellationToken) {
        loop {
            self.inner.replicas.check(&self.inner.http).await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.inner.settings.health_interval) => {}
            }
        }
    }

    /// The pipeline's signals, from the first replica that answers.
    async fn readiness(&self) -> Option<Readiness> {
        for replica in self.inner.replicas.all() {
            let url = format!("{}/ready", replica.url);
            let Ok(answer) = self
                .inner
                .http
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
            else {
                continue;
            };
            if let Ok(readiness) = answer.json::<Readiness>().await {
                return Some(readiness);
            }
        }
        None
    }

    /// Charges the request to its policy's bucket. `Ok(headers)` to send with the
    /// answer; `Err(response)` to send instead (429, or 503 when failing closed).
    async fn limit(
        &self,
        route: &'static str,
        policy: Policy,
        key: &str,
    ) -> Result<HeaderMap, Response> {
        let inner = &self.inner;
        let Some(redis) = &inner.redis else {
            return Ok(HeaderMap::new());
        };
        let quota = match policy {
            Policy::Customer => inner.settings.customer_quota(),
            Policy::Ip => inner.settings.ip_quota(),
        };
        let mut redis = redis.clone();
        let redis_key = format!("ratelimit:{}:{key}", policy.name());
        let checked = tokio::time::timeout(
            inner.settings.redis_timeout,
            inner.gcra.check(&mut redis, &redis_key, quota),
        )
        .await
        .map_err(|_| "no answer in time".to_owned())
        .and_then(|answer| answer.map_err(|err| err.to_string()));
        match checked {
            Ok(decision) => {
                // Logged once per change, not once per request.
                if inner.metrics.limiter_failing.set(0) == 1 {
                    tracing::info!("rate limiter: Redis answers again");
                }
                let headers = rate_limit_headers(policy, quota, &decision);
                if decision.allowed {
                    Ok(headers)
                } else {
                    inner.metrics.count(route, Outcome::rate_limited);
                    Err(too_many_requests(policy, &decision, headers))
                }
            }
            Err(error) => {
                inner.metrics.limiter_errors.inc();
                if inner.metrics.limiter_failing.set(1) == 0 {
                    tracing::warn!(
                        %error,
                        fails = inner.settings.on_redis_error.as_str(),
                        "rate limiter: Redis does not answer; failing {} (--on-redis-error)",
                        inner.settings.on_redis_error.as_str()
                    );
                }
                match inner.settings.on_redis_error {
                    OnRedisError::Open => Ok(HeaderMap::new()),
                    OnRedisError::Closed => {
                        inner.metrics.count(route, Outcome::limiter_unavailable);
                        let mut response = Problem::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "rate-limiter-unavailable",
                            "The rate limiter is unavailable",
                        )
                        .detail("the gateway fails closed when it cannot reach Redis")
                        .into_response();
                        response
                            .headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                        Err(response)
                    }
                }
            }
        }
    }

    /// Sends the request on to the next order API replica that may take it (see
    /// [`upstream`]); a refused connection is tried once more on another replica.
    async fn forward(
        &self,
        route: &'static str,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), Response> {
        let inner = &self.inner;
        let unavailable = |detail: String| {
            inner.metrics.count(route, Outcome::upstream_error);
            let mut response = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream-unavailable",
                "No order API replica could take the request",
            )
            .detail(detail)
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        };
        let mut tried: Option<String> = None;
        loop {
            let Some(chosen) = inner.replicas.choose(tried.as_deref()) else {
                return Err(unavailable(match tried {
                    Some(url) => {
                        format!("{url} refused the connection and no other replica is available")
                    }
                    None => {
                        "every replica is out of the rotation or behind an open breaker".to_owned()
                    }
                }));
            };
            let url = format!("{}{path}", chosen.replica.url);
            let mut request = inner.http.request(method.clone(), &url);
            for name in FORWARDED_REQUEST_HEADERS {
                if let Some(value) = headers.get(&name) {
                    request = request.header(&name, value);
                }
            }
            if let Some(body) = &body {
                request = request
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body.clone()); // cheap: a reference count
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(err) => {
                    let replica = chosen.replica.url.clone();
                    chosen.failed();
                    tracing::warn!(%url, error = %format!("{err:#}"), "gateway: the order API did not answer");
                    if err.is_connect() && tried.is_none() {
                        tried = Some(replica); // never reached it: safe to send elsewhere
                        continue;
                    }
                    inner.metrics.count(route, Outcome::upstream_error);
                    return Err(Problem::new(
                        if err.is_timeout() {
                            StatusCode::GATEWAY_TIMEOUT
                        } else {
                            StatusCode::BAD_GATEWAY
                        },
                        "upstream-unavailable",
                        "The order API did not answer",
                    )
                    .detail(format!("{err:#}"))
                    .into_response());
                }
            };
            let status = response.status();
            let mut out = HeaderMap::new();
            for name in FORWARDED_RESPONSE_HEADERS {
                if let Some(value) = response.headers().get(&name) {
                    out.insert(name, value.clone());
                }
            }
            let body = match response.bytes().await {
                Ok(body) => body,
                Err(err) => {
                    chosen.failed();
                    return Err(unavailable(format!("reading the answer of {url}: {err:#}")));
                }
            };
            if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
                chosen.failed();
            } else {
                chosen.answered();
            }
            inner.metrics.count(route, Outcome::forwarded);
            return Ok((status, out, body));
        }
    }
}

/// Headers a client's request keeps on its way to the order API.
const FORWARDED_REQUEST_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("idempotency-key"),
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("traceparent"),
    header::ACCEPT,
];

/// Headers of the order API's answer the client sees.
const FORWARDED_RESPONSE_HEADERS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::LOCATION,
    header::RETRY_AFTER,
    HeaderName::from_static("idempotency-replayed"),
];

/// `RateLimit-Policy` and `RateLimit` as draft-ietf-httpapi-ratelimit-headers
/// (structured fields): `"customer";q=40;w=2` and `"customer";r=39;t=1`.
fn rate_limit_headers(policy: Policy, quota: Quota, decision: &Decision) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let policy_value = format!(
        "\"{}\";q={};w={}",
        policy.name(),
        quota.burst,
        quota.window().as_secs()
    );
    let limit_value = format!(
        "\"{}\";r={};t={}",
        policy.name(),
        decision.remaining,
        gcra::header_seconds(decision.reset_after)
    );
    for (name, value) in [
        ("ratelimit-policy", policy_value),
        ("ratelimit", limit_value),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers
}

fn too_many_requests(policy: Policy, decision: &Decision, headers: HeaderMap) -> Response {
    let retry_after = gcra::header_seconds(decision.retry_after).max(1);
    let mut response = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many requests",
    )
    .detail(format!(
        "the {} limit is used up; retry after {retry_after} s",
        policy.name()
    ))
    .into_response();
    response.headers_mut().extend(headers);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

/// An answer the gateway gives instead of forwarding (401, 429, 503, 502…), boxed
/// so that `Result<Response, Refusal>` stays small and handlers can use `?`.
#[derive(Debug)]
pub struct Refusal(Box<Response>);

impl From<Response> for Refusal {
    fn from(response: Response) -> Refusal {
        Refusal(Box::new(response))
    }
}

impl From<Box<Response>> for Refusal {
    fn from(response: Box<Response>) -> Refusal {
        Refusal(response)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl Gateway {
    /// Who is asking: the token's customer, or 401.
    fn customer(
        &self,
        route: &'static str,
        customer: Result<Customer, auth::Unauthorized>,
    ) -> Result<String, Refusal> {
        customer.map(|Customer(id)| id).map_err(|refused| {
            self.metrics().count(route, Outcome::unauthorized);
            refused.into_response().into()
        })
    }

    /// A slot (or 503), then the rate limit (or 429): the slot is held until the
    /// answer is ready, the headers go with it.
    async fn gate(
        &self,
        route: &'static str,
        kind: Kind,
        policy: Policy,
        key: &str,
    ) -> Result<(InFlight, HeaderMap), Refusal> {
        let slot = self.admit(route, kind)?;
        let limits = self.limit(route, policy, key).await?;
        Ok((slot, limits))
    }
}

/// The client-facing routes and their OpenAPI document (`GET /openapi.json`, checked
/// in as `openapi/gateway.json`): phase 2's order API behind a bearer token, rate
/// limits and load shedding — which is what the extra statuses document.
pub fn routes() -> (Router<Gateway>, utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
    let routes = OpenApiRouter::new()
        .routes(routes!(menu))
        .routes(routes!(place_order))
        .routes(routes!(get_order));
    let (router, mut doc) = common::http::openapi::serve(
        routes,
        "FerrisEats phase 4: gateway",
        "The only door for clients. Who is calling (an HS256 bearer token, `sub` = the \
         customer), how often (GCRA limits shared through Redis: 429 with `Retry-After` and \
         `RateLimit` headers), and how much at once (a cheap 503 beyond its slots, writes \
         shed before reads) are decided here; what passes goes to phase 2's order API.",
    );
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256, issuer `ferriseats`, subject = the customer: \
                     `phase4-chaos token alice` prints one.",
                    ))
                    .build(),
            ),
        );
    (router, doc)
}

/// The name of the security scheme in the OpenAPI document (the `security(...)` of
/// each path names it too: utoipa takes only a literal there).
const BEARER: &str = "bearer";

/// What the gateway itself can answer instead of forwarding; every route can.
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)] // a description for the OpenAPI document, never built
enum Refusals {
    /// No bearer token, or one that does not verify (`WWW-Authenticate: Bearer`).
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// A rate limit is used up: `Retry-After`, `RateLimit`, `RateLimit-Policy` say when.
    #[response(status = 429, content_type = "application/problem+json",
        headers(("retry-after" = u64, description = "Seconds until a retry can pass"),
                ("ratelimit" = String, description = "IETF draft: remaining and reset"),
                ("ratelimit-policy" = String, description = "IETF draft: quota and window")))]
    TooManyRequests(Problem),
    /// No order API replica answered usefully.
    #[response(status = 502, content_type = "application/problem+json")]
    BadGateway(Problem),
    /// Shed (too much in flight, or the pipeline is behind), or no replica is ready;
    /// `Retry-After` says when to try again.
    #[response(status = 503, content_type = "application/problem+json",
        headers(("retry-after" = u64, description = "Seconds to wait")))]
    Unavailable(Problem),
    /// The order API did not answer in time.
    #[response(status = 504, content_type = "application/problem+json")]
    GatewayTimeout(Problem),
}

/// `POST /orders` through the gateway: phase 2's body, but the customer is the token's.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[schema(examples(json!({"items": [{"sku": "pizza-margherita", "qty": 2}]})))]
#[allow(dead_code)] // describes the body for the OpenAPI document; the gateway forwards bytes
struct GatewayOrder {
    /// Ignored: replaced by the token's subject.
    customer_id: Option<String>,
    #[schema(min_items = 1, max_items = 20)]
    items: Vec<common::domain::LineItem>,
}

fn answer(status: StatusCode, mut headers: HeaderMap, limits: HeaderMap, body: Bytes) -> Response {
    headers.extend(limits);
    (status, headers, body).into_response()
}

/// `GET /menu`: public. Limited per customer when a token comes with it (a signed-in
/// customer browsing), per client IP when none does; a token that does not verify is
/// a 401 all the same.
#[utoipa::path(get, path = "/menu", tag = "orders", security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The menu, from the order API", body = [common::domain::MenuItem]),
        Refusals,
    ))]
async fn menu(
    State(gateway): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    customer: Result<Customer, auth::Unauthorized>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    const ROUTE: &str = "/menu";
    let (policy, key) = if headers.contains_key(header::AUTHORIZATION) {
        (Policy::Customer, gateway.customer(ROUTE, customer)?)
    } else {
        (Policy::Ip, peer.ip().to_string())
    };
    let (_slot, limits) = gateway.gate(ROUTE, Kind::Read, policy, &key).await?;
    let (status, out, body) = gateway
        .forward(ROUTE, Method::GET, "/menu", &headers, None)
        .await?;
    Ok(answer(status, out, limits, body))
}

/// `POST /orders`: the customer comes from the token; any `customer_id` in the body
/// is replaced by it.
#[utoipa::path(post, path = "/orders", tag = "orders", security(("bearer" = [])),
    params(phase1_monolith::idempotency::IdempotencyHeader),
    request_body = GatewayOrder,
    responses(
        (status = 202, description = "Accepted by the order API (`placed`); poll `Location`", body = common::domain::Order,
            headers(("location" = String, description = "`/orders/{id}`")),
            links(("GetOrder" = (operation_id = "get_order", parameters(("id" = "$response.body#/id")), description = "The order just placed")))),
        (status = 400, description = "Malformed JSON, or a malformed Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid order (from the order API), or a body that is not an object", body = Problem, content_type = "application/problem+json"),
        Refusals,
    ))]
async fn place_order(
    State(gateway): State<Gateway>,
    customer: Result<Customer, auth::Unauthorized>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    const ROUTE: &str = "/orders";
    let customer = gateway.customer(ROUTE, customer)?;
    let (_slot, limits) = gateway
        .gate(ROUTE, Kind::Write, Policy::Customer, &customer)
        .await?;
    let body = with_customer(&body, &customer).map_err(|problem| {
        gateway.metrics().count(ROUTE, Outcome::bad_request);
        problem.into_response()
    })?;
    let (status, out, body) = gateway
        .forward(ROUTE, Method::POST, "/orders", &headers, Some(body))
        .await?;
    Ok(answer(status, out, limits, body))
}

/// The body with `customer_id` set to the token's customer.
fn with_customer(body: &[u8], customer: &str) -> Result<Bytes, Problem> {
    let mut value: serde_json::Value = serde_json::from_slice(body).map_err(|err| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "The body is not valid JSON",
        )
        .detail(err.to_string())
    })?;
    let object = value.as_object_mut().ok_or_else(|| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "The body must be a JSON object",
        )
    })?;
    object.insert(
        "customer_id".to_owned(),
        serde_json::Value::String(customer.to_owned()),
    );
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|_| Problem::internal())
}

/// `GET /orders/{id}`: a customer sees only their own orders; another customer's
/// order is answered exactly like one that does not exist (404), so ids cannot be
/// probed.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, description = "The order id from `POST /orders`")),
    responses(
        (status = 200, description = "The order, if it is the caller's", body = common::domain::Order),
        (status = 404, description = "No such order, or another customer's", body = Problem, content_type = "application/problem+json"),
        Refusals,
    ))]
async fn get_order(
    State(gateway): State<Gateway>,
    customer: Result<Customer, auth::Unauthorized>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    const ROUTE: &str = "/orders/{id}";
    let customer = gateway.customer(ROUTE, customer)?;
    let (_slot, limits) = gateway
        .gate(ROUTE, Kind::Read, Policy::Customer, &customer)
        .await?;
    let path = format!("/orders/{}", urlencoding_path(&id));
    let (status, out, body) = gateway
        .forward(ROUTE, Method::GET, &path, &headers, None)
        .await?;
    if status == StatusCode::OK && !owned_by(&body, &customer) {
        return Ok(
            Problem::new(StatusCode::NOT_FOUND, "not-found", "Order not found")
                .detail(format!("no order {id}"))
                .into_response(),
        );
    }
    Ok(answer(status, out, limits, body))
}

fn owned_by(body: &[u8], customer: &str) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|order| order.get("customer_id")?.as_str().map(|c| c == customer))
        .unwrap_or(false)
}

/// Characters kept as they are in a path segment: RFC 3986's unreserved ones.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// An order id as one path segment (ids are UUIDs; anything else is escaped so it
/// cannot reach another route of the order API).
fn urlencoding_path(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, UNRESERVED).to_string()
}

/// `/health` (the process is alive), `/ready` (the last health check found an order
/// API replica ready), `/metrics` (OpenMetrics text).
pub fn ops_router(gateway: Gateway) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(gateway)
}

async fn ready(State(gateway): State<Gateway>) -> Response {
    if gateway.inner.replicas.any_ready() {
        return axum::Json(serde_json::json!({"status": "ready"})).into_response();
    }
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not-ready",
        "No order API replica is ready",
    )
    .detail("the last health check found no replica answering its /ready")
    .into_response()
}

async fn metrics(State(gateway): State<Gateway>) -> Response {
    crate::metrics_response(&gateway.inner.registry)
}

/// A listener on `addr`, shared with other processes that set `SO_REUSEPORT` too
/// when `reuse_port`.
fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_customer_in_the_body_is_replaced_by_the_tokens() {
        let body = br#"{"customer_id":"mallory","items":[{"sku":"cola","qty":1}]}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&with_customer(body, "alice").unwrap()).unwrap();
        assert_eq!(out["customer_id"], "alice");
        assert_eq!(out["items"][0]["sku"], "cola");
        let missing: serde_json::Value =
            serde_json::from_slice(&with_customer(br#"{"items":[]}"#, "bob").unwrap()).unwrap();
        assert_eq!(missing["customer_id"], "bob");
        assert_eq!(
            with_customer(b"[1]", "alice").unwrap_err().status_code(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            with_customer(b"{", "alice").unwrap_err().status_code(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn rate_limit_headers_follow_the_ietf_draft() {
        let quota = Quota {
            per_second: 20.0,
            burst: 40,
        };
        let decision = Decision {
            allowed: true,
            remaining: 39,
            reset_after: Duration::from_millis(50),
            retry_after: Duration::ZERO,
        };
        let headers = rate_limit_headers(Policy::Customer, quota, &decision);
        assert_eq!(headers["ratelimit-policy"], "\"customer\";q=40;w=2");
        assert_eq!(headers["ratelimit"], "\"customer\";r=39;t=1");
    }

    async fn gateway(args: &[&str]) -> Gateway {
        let mut argv = vec!["--no-rate-limit"];
        argv.extend_from_slice(args);
        Gateway::new(crate::parse_flags(&argv).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn beyond_its_slots_the_gateway_sheds_writes_first_and_never_queues() {
        let gateway = gateway(&["--max-in-flight", "4"]).await;
        let writes: Vec<_> = (0..3)
            .map(|_| gateway.admit("/orders", Kind::Write).unwrap())
            .collect();
        let shed = gateway.admit("/orders", Kind::Write).unwrap_err();
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shed.headers()["retry-after"], "1");
        // The last quarter is the reads'.
        let read = gateway.admit("/menu", Kind::Read).unwrap();
        assert!(
            gateway.admit("/menu", Kind::Read).is_err(),
            "all four slots taken"
        );
        drop(read);
        drop(writes);
        assert_eq!(gateway.inner.metrics.in_flight.get(), 0, "slots come back");
        assert!(gateway.admit("/orders", Kind::Write).is_ok());

        let unprotected = gateway_unprotected().await;
        let held: Vec<_> = (0..10)
            .map(|_| unprotected.admit("/orders", Kind::Write).unwrap())
            .collect();
        assert_eq!(held.len(), 10, "--no-shedding lets everything in");
    }

    async fn gateway_unprotected() -> Gateway {
        gateway(&["--max-in-flight", "4", "--no-shedding"]).await
    }

    #[test]
    fn an_order_id_cannot_escape_its_path_segment() {
        assert_eq!(urlencoding_path("../menu"), "..%2Fmenu");
        assert_eq!(
            urlencoding_path("0193a3c0-7d6e-7000-8000-000000000000"),
            "0193a3c0-7d6e-7000-8000-000000000000"
        );
    }
}
