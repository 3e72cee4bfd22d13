//! The payment provider simulator (see the module above for what it simulates).
//!
//! The order of operations inside `POST /payments` is the lesson:
//! decide the outcome → **record the charge** → sleep the latency → answer.
//! A client whose timeout fires during the sleep has been charged anyway.

use super::{
    ChargeRecord, ChargeRequest, ChargeStatus, IDEMPOTENCY_KEY_HEADER, Ledger, OrderCharges,
};
use crate::http::openapi::{self, JsonBodyProblems};
use crate::http::{ApiJson, HttpLimits, Problem, RequestId, with_standard_layers};
use crate::shutdown::CancellationToken;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A latency range such as `2s..5s`, `150ms` or `0`; each request sleeps a uniformly
/// random time inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyRange {
    pub min: Duration,
    pub max: Duration,
}

impl LatencyRange {
    pub const ZERO: LatencyRange = LatencyRange {
        min: Duration::ZERO,
        max: Duration::ZERO,
    };

    pub fn sample(&self) -> Duration {
        let spread = self.max.saturating_sub(self.min);
        self.min + spread.mul_f64(rand::random::<f64>())
    }
}

// Serialized as serde does a `Duration`: `{"secs": 2, "nanos": 0}`.
schema_of!(LatencyRange, |s| {
    use utoipa::openapi::{ObjectBuilder, Type};
    let duration = || {
        ObjectBuilder::new()
            .property(
                "secs",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .property(
                "nanos",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .required("secs")
            .required("nanos")
    };
    s.schema_type(Type::Object)
        .property("min", duration())
        .property("max", duration())
        .required("min")
        .required("max")
        .description(Some(
            "Each request sleeps a uniformly random time in min..=max.",
        ))
});

impl FromStr for LatencyRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |part: &str| -> Result<Duration, String> {
            let part = part.trim();
            if part == "0" {
                return Ok(Duration::ZERO);
            }
            humantime::parse_duration(part).map_err(|e| format!("{part:?}: {e}"))
        };
        let (min, max) = match s.split_once("..") {
            Some((lo, hi)) => (parse(lo)?, parse(hi)?),
            None => (parse(s)?, parse(s)?),
        };
        if min > max {
            return Err(format!("latency range {s:?} has min > max"));
        }
        Ok(LatencyRange { min, max })
    }
}

/// How the simulated provider behaves. Every field can also be changed at runtime
/// with `PUT /control`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulatorConfig {
    /// Where the provider simulator listens.
    #[arg(
        id = "provider_addr",
        long = "provider-addr",
        env = "PROVIDER_ADDR",
        default_value = "127.0.0.1:3001"
    )]
    pub addr: SocketAddr,
    /// Share of payment requests that fail transiently with 503 (nothing charged).
    #[arg(
        long = "payment-failure-rate",
        env = "PAYMENT_FAILURE_RATE",
        default_value_t = 0.3
    )]
    pub failure_rate: f64,
    /// Share of payment requests whose card is declined (402, recorded, final).
    #[arg(
        long = "payment-decline-rate",
        env = "PAYMENT_DECLINE_RATE",
        default_value_t = 0.05
    )]
    pub decline_rate: f64,
    /// Provider latency per request: `2s..5s`, `300ms`, `0`.
    #[arg(
        long = "payment-latency",
        env = "PAYMENT_LATENCY",
        default_value = "2s..5s"
    )]
    pub latency: LatencyRange,
}

impl SimulatorConfig {
    /// A fast, reliable provider on an ephemeral port (tests and benchmarks).
    pub fn instant() -> Self {
        SimulatorConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            failure_rate: 0.0,
            decline_rate: 0.0,
            latency: LatencyRange::ZERO,
        }
    }
}

/// The runtime-adjustable part of the configuration (`GET`/`PUT /control`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Behaviour {
    pub failure_rate: f64,
    pub decline_rate: f64,
    pub latency: LatencyRange,
}

/// `PUT /control` body: only the fields given are changed.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BehaviourPatch {
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub failure_rate: Option<f64>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub decline_rate: Option<f64>,
    /// e.g. `"2s..5s"`, `"300ms"`, `"0"`.
    #[schema(examples("2s..5s"))]
    pub latency: Option<String>,
}

/// The simulator's state; cheap to clone (all shared).
#[derive(Debug, Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    behaviour: RwLock<Behaviour>,
    // One lock for "look up key, then record": two concurrent requests with the same
    // key must not both decide to charge.
    charges: Mutex<Charges>,
    requests_received: AtomicU64,
}

/// Every charge, in the order made, with indexes by idempotency key and by order: a
/// benchmark makes hundreds of thousands, and scanning them all for every request
/// made the simulator the slowest part of the system it simulates for.
#[derive(Debug, Default)]
struct Charges {
    all: Vec<ChargeRecord>,
    by_key: HashMap<String, usize>,
    by_order: HashMap<String, Vec<usize>>,
}

impl Charges {
    fn with_key(&self, key: &str) -> Option<&ChargeRecord> {
        self.by_key.get(key).map(|&i| &self.all[i])
    }

    fn push(&mut self, charge: ChargeRecord) {
        let i = self.all.len();
        if let Some(key) = &charge.idempotency_key {
            self.by_key.insert(key.clone(), i);
        }
        self.by_order
            .entry(charge.order_id.clone())
            .or_default()
            .push(i);
        self.all.push(charge);
    }

    fn of_order(&self, order_id: &str) -> impl Iterator<Item = usize> + '_ {
        self.by_order.get(order_id).into_iter().flatten().copied()
    }
}

enum Decision {
    Replay(ChargeRecord),
    Transient,
    Charged(ChargeRecord),
}

impl Simulator {
    pub fn new(config: &SimulatorConfig) -> Self {
        Simulator {
            inner: Arc::new(Inner {
                behaviour: RwLock::new(Behaviour {
                    failure_rate: config.failure_rate,
                    decline_rate: config.decline_rate,
                    latency: config.latency,
                }),
                charges: Mutex::new(Charges::default()),
                requests_received: AtomicU64::new(0),
            }),
        }
    }

    pub fn behaviour(&self) -> Behaviour {
        *self
            .inner
            .behaviour
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Charge requests received so far (cheaper than [`Simulator::ledger`]).
    pub fn requests_received(&self) -> u64 {
        self.inner.requests_received.load(Ordering::Relaxed)
    }

    pub fn ledger(&self) -> Ledger {
        Ledger {
            requests_received: self.requests_received(),
            charges: self.charges().all.clone(),
        }
    }

    fn charges(&self) -> std::sync::MutexGuard<'_, Charges> {
        self.inner.charges.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn decide(
        &self,
        req: &ChargeRequest,
        key: Option<&str>,
        request_id: &str,
    ) -> Result<Decision, Problem> {
        let behaviour = self.behaviour();
        let mut charges = self.charges();
        if let Some(key) = key
            && let Some(existing) = charges.with_key(key)
        {
            if existing.order_id != req.order_id || existing.amount_cents != req.amount_cents {
                return Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    "Idempotency-Key reused with a different request",
                ));
            }
            return Ok(Decision::Replay(existing.clone()));
        }
        let roll = rand::random::<f64>();
        if roll < behaviour.failure_rate {
            return Ok(Decision::Transient);
        }
        let status = if roll < behaviour.failure_rate + behaviour.decline_rate {
            ChargeStatus::Declined
        } else {
            ChargeStatus::Captured
        };
        let record = ChargeRecord {
            charge_id: format!("ch_{}", uuid::Uuid::now_v7().simple()),
            order_id: req.order_id.clone(),
            amount_cents: req.amount_cents,
            status,
            idempotency_key: key.map(str::to_owned),
            request_id: (!request_id.is_empty()).then(|| request_id.to_owned()),
            created_at: Utc::now(),
            refunded_at: None,
        };
        charges.push(record.clone());
        Ok(Decision::Charged(record))
    }

    /// The provider's HTTP API, with its OpenAPI document at `GET /openapi.json`.
    pub fn router(&self, limits: HttpLimits) -> Router {
        let (api, _doc) = Self::api();
        with_standard_layers(api.with_state(self.clone()), limits)
    }

    /// The routes and the OpenAPI document they generate.
    pub fn api() -> (Router<Simulator>, utoipa::openapi::OpenApi) {
        let routes = OpenApiRouter::new()
            .routes(routes!(charge))
            .routes(routes!(charges_for_order))
            .routes(routes!(refund))
            .routes(routes!(ledger))
            .routes(routes!(get_control, put_control))
            .routes(routes!(crate::http::health));
        openapi::serve(
            routes,
            "FerrisEats payment provider simulator",
            "A card processor that is slow, fails transiently, declines some cards and \
             charges before it answers. Every behaviour can be changed live with PUT /control.",
        )
    }

    /// Serves the provider on `listener` until `shutdown` is cancelled.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let app = self.router(HttpLimits::default());
        tracing::info!(addr = %listener.local_addr()?, "payment provider simulator listening");
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}

/// Charge an order. Honours `Idempotency-Key`: the same key and body answer with the
/// first charge (`Idempotent-Replayed: true`); nothing is charged twice.
#[utoipa::path(post, path = "/payments", tag = "payments",
    params(("idempotency-key" = Option<String>, Header, description = "Makes a retry safe: the same key answers with the first charge.")),
    request_body = ChargeRequest,
    responses(
        (status = 201, description = "Captured", body = ChargeRecord),
        (status = 402, description = "Card declined (recorded, final)", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        (status = 422, description = "Invalid charge, or an idempotency key reused for another charge", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Simulated transient failure: nothing charged, retry", body = Problem, content_type = "application/problem+json"),
    ))]
async fn charge(
    State(sim): State<Simulator>,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ChargeRequest>,
) -> Response {
    sim.inner.requests_received.fetch_add(1, Ordering::Relaxed);
    if req.amount_cents <= 0 || req.order_id.is_empty() {
        return Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-charge",
            "Invalid charge",
        )
        .detail("order_id must be set and amount_cents must be positive")
        .into_response();
    }
    let key = headers
        .get(IDEMPOTENCY_KEY_HEADER)
        .and_then(|v| v.to_str().ok());
    let decision = match sim.decide(&req, key, &request_id) {
        Ok(decision) => decision,
        Err(problem) => return problem.into_response(),
    };
    let latency = sim.behaviour().latency.sample();
    let (outcome, response) = match decision {
        Decision::Transient => (
            "transient_failure",
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "provider-unavailable",
                "Provider temporarily unavailable",
            )
            .detail("simulated transient failure; nothing was charged")
            .into_response(),
        ),
        Decision::Replay(record) => {
            let mut response = charge_response(record);
            response
                .headers_mut()
                .insert("idempotent-replayed", "true".parse().unwrap());
            ("replayed", response)
        }
        Decision::Charged(record) => {
            let outcome = match record.status {
                ChargeStatus::Captured => "captured",
                ChargeStatus::Declined => "declined",
            };
            (outcome, charge_response(record))
        }
    };
    tracing::info!(
        order_id = %req.order_id,
        amount_cents = req.amount_cents,
        idempotency_key = key,
        outcome,
        latency_ms = latency.as_millis() as u64,
        "payment request handled; answering after simulated latency"
    );
    tokio::time::sleep(latency).await;
    response
}

fn charge_response(record: ChargeRecord) -> Response {
    match record.status {
        ChargeStatus::Captured => (StatusCode::CREATED, Json(record)).into_response(),
        ChargeStatus::Declined => Problem::new(
            StatusCode::PAYMENT_REQUIRED,
            "card-declined",
            "Card declined",
        )
        .with("charge_id", record.charge_id)
        .with("order_id", record.order_id)
        .into_response(),
    }
}

#[utoipa::path(get, path = "/payments/{order_id}", tag = "payments",
    params(("order_id" = String, Path, description = "The order whose charges to list")),
    responses(
        (status = 200, description = "Every charge recorded for the order (reconciliation)", body = OrderCharges),
        (status = 503, description = "Simulated transient failure, as for charges", body = Problem, content_type = "application/problem+json"),
    ))]
/// Lookups are as flaky as charges: a provider that is down is down for every call
/// (so a successful lookup never closes a breaker that charges would trip again).
async fn charges_for_order(State(sim): State<Simulator>, Path(order_id): Path<String>) -> Response {
    if rand::random::<f64>() < sim.behaviour().failure_rate {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "provider-unavailable",
            "Provider temporarily unavailable",
        )
        .into_response();
    }
    let charges = {
        let all = sim.charges();
        all.of_order(&order_id)
            .map(|i| all.all[i].clone())
            .collect()
    };
    Json(OrderCharges { order_id, charges }).into_response()
}

#[utoipa::path(post, path = "/payments/{order_id}/refund", tag = "payments",
    params(("order_id" = String, Path, description = "The order to refund")),
    responses(
        (status = 200, description = "The refunded charges (refunding twice changes nothing)", body = OrderCharges),
        (status = 404, description = "The order has no captured charge", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Simulated transient failure: nothing refunded, retry", body = Problem, content_type = "application/problem+json"),
    ))]
/// Refunds every captured charge of an order. Refunding twice changes nothing (the
/// first refund time stays), so a caller may retry freely. 404 when the order has no
/// captured charge: there is nothing to give back.
async fn refund(State(sim): State<Simulator>, Path(order_id): Path<String>) -> Response {
    if rand::random::<f64>() < sim.behaviour().failure_rate {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "provider-unavailable",
            "Provider temporarily unavailable",
        )
        .detail("simulated transient failure; nothing was refunded")
        .into_response();
    }
    let mut charges = sim.charges();
    let now = Utc::now();
    let mut refunded = Vec::new();
    let of_order: Vec<usize> = charges.of_order(&order_id).collect();
    for i in of_order {
        let charge = &mut charges.all[i];
        if charge.status == ChargeStatus::Captured {
            charge.refunded_at.get_or_insert(now);
            refunded.push(charge.clone());
        }
    }
    drop(charges);
    if refunded.is_empty() {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "no-captured-charge",
            "Nothing to refund",
        )
        .detail(format!("order {order_id} has no captured charge"))
        .into_response();
    }
    tracing::info!(order_id, charges = refunded.len(), "refunded");
    Json(OrderCharges {
        order_id,
        charges: refunded,
    })
    .into_response()
}

/// Every charge, and how many charge requests arrived: duplicates can be counted.
#[utoipa::path(get, path = "/ledger", tag = "provider",
    responses((status = 200, description = "The provider's books", body = Ledger)))]
async fn ledger(State(sim): State<Simulator>) -> Json<Ledger> {
    Json(sim.ledger())
}

/// How the provider behaves now.
#[utoipa::path(get, path = "/control", tag = "provider",
    responses((status = 200, description = "Failure rate, decline rate and latency", body = Behaviour)))]
async fn get_control(State(sim): State<Simulator>) -> Json<Behaviour> {
    Json(sim.behaviour())
}

/// Change how the provider behaves, live; only the fields given change.
#[utoipa::path(put, path = "/control", tag = "provider",
    request_body = BehaviourPatch,
    responses(
        (status = 200, description = "The behaviour now", body = Behaviour),
        JsonBodyProblems,
        (status = 422, description = "A rate outside 0..=1, a bad latency or an unknown field", body = Problem, content_type = "application/problem+json"),
    ))]
async fn put_control(
    State(sim): State<Simulator>,
    ApiJson(patch): ApiJson<BehaviourPatch>,
) -> Result<Json<Behaviour>, Problem> {
    let invalid = |detail: String| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-control",
            "Invalid control values",
        )
        .detail(detail)
    };
    let latency = patch
        .latency
        .as_deref()
        .map(str::parse::<LatencyRange>)
        .transpose()
        .map_err(invalid)?;
    for rate in [patch.failure_rate, patch.decline_rate]
        .into_iter()
        .flatten()
    {
        if !(0.0..=1.0).contains(&rate) {
            return Err(invalid(format!("rates must be within 0..=1 (got {rate})")));
        }
    }
    let mut behaviour = sim
        .inner
        .behaviour
        .write()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(rate) = patch.failure_rate {
        behaviour.failure_rate = rate;
    }
    if let Some(rate) = patch.decline_rate {
        behaviour.decline_rate = rate;
    }
    if let Some(latency) = latency {
        behaviour.latency = latency;
    }
    tracing::warn!(behaviour = ?*behaviour, "payment provider behaviour changed");
    Ok(Json(*behaviour))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_ranges_parse_from_human_text() {
        let range: LatencyRange = "2s..5s".parse().unwrap();
        assert_eq!(
            (range.min, range.max),
            (Duration::from_secs(2), Duration::from_secs(5))
        );
        assert_eq!("0".parse::<LatencyRange>().unwrap(), LatencyRange::ZERO);
        let fixed: LatencyRange = "150ms".parse().unwrap();
        assert_eq!(fixed.min, fixed.max);
        assert!("5s..2s".parse::<LatencyRange>().is_err());
        assert!("soon".parse::<LatencyRange>().is_err());
    }

    #[test]
    fn samples_stay_inside_the_range() {
        let range: LatencyRange = "10ms..20ms".parse().unwrap();
        for _ in 0..1000 {
            let d = range.sample();
            assert!(d >= range.min && d <= range.max);
        }
    }

    #[test]
    fn the_same_key_is_charged_once() {
        let sim = Simulator::new(&SimulatorConfig::instant());
        let req = ChargeRequest {
            order_id: "o1".into(),
            amount_cents: 100,
        };
        let first = sim.decide(&req, Some("k1"), "r1").ok().unwrap();
        let second = sim.decide(&req, Some("k1"), "r2").ok().unwrap();
        assert!(matches!(first, Decision::Charged(_)));
        assert!(matches!(second, Decision::Replay(_)));
        assert_eq!(sim.ledger().charges.len(), 1);
    }

    #[test]
    fn without_a_key_every_request_is_a_new_charge() {
        let sim = Simulator::new(&SimulatorConfig::instant());
        let req = ChargeRequest {
            order_id: "o1".into(),
            amount_cents: 100,
        };
        for _ in 0..3 {
            assert!(matches!(
                sim.decide(&req, None, "").ok().unwrap(),
                Decision::Charged(_)
            ));
        }
        assert_eq!(sim.ledger().duplicate_charges().get("o1"), Some(&3));
    }

    #[test]
    fn a_key_reused_for_another_order_is_refused() {
        let sim = Simulator::new(&SimulatorConfig::instant());
        let a = ChargeRequest {
            order_id: "o1".into(),
            amount_cents: 100,
        };
        let b = ChargeRequest {
            order_id: "o2".into(),
            amount_cents: 100,
        };
        assert!(sim.decide(&a, Some("k"), "").is_ok());
        assert!(sim.decide(&b, Some("k"), "").is_err());
    }
}
