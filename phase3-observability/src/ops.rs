//! The ops server: one per process, next to the services' own ports.
//!
//! | route                              | what                                           |
//! |------------------------------------|------------------------------------------------|
//! | `GET /metrics`                     | every metric of the process, OpenMetrics text  |
//! | `GET /health`                      | the process is alive (liveness)                |
//! | `GET /ready`                       | send it traffic: its databases answer, and it is not shutting down (readiness) |
//! | `GET /admin/incidents`             | the planned incidents here, and which are on   |
//! | `PUT /admin/incidents/{name}`      | switch one on                                  |
//! | `DELETE /admin/incidents/{name}`   | switch it off                                  |
//!
//! Metrics and admin live apart from the public API (3000, 3002): a scraper or an
//! instructor never competes with customers for the API's limits, and the admin
//! routes are never reachable from where customers come in.

use crate::incidents::{Incidents, Status};
use crate::metrics::Metrics;
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use common::http::layers::{HttpLimits, with_standard_layers};
use common::http::problem::Problem;
use common::shutdown::CancellationToken;
use serde_json::{Value, json};
use std::time::Duration;

/// What `/ready` checks. Liveness (`/health`) and readiness differ on purpose: a
/// process whose database is away is alive — restarting it cures nothing — but
/// should get no traffic; a process draining after SIGTERM is alive until it has
/// finished, and must get no new work.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    /// Cancelled from SIGTERM on: `/ready` answers 503 `draining` while the process
    /// finishes what it holds (and `/health` still 200, so nothing kills it early).
    pub draining: CancellationToken,
    /// The process's databases: each must answer `SELECT 1` within [`READY_TIMEOUT`].
    pub databases: Vec<(String, sqlx::AnyPool)>,
}

/// How long `/ready` waits for a database (a probe's own timeout is 1 s by default).
pub const READY_TIMEOUT: Duration = Duration::from_millis(800);

#[derive(Debug, Clone)]
struct Ops {
    service: &'static str,
    incidents: Incidents,
    readiness: Readiness,
}

/// The ops router of a process running `service` (`all`, `order`, …).
pub fn router(
    service: &'static str,
    metrics: Metrics,
    incidents: Incidents,
    readiness: Readiness,
) -> Router {
    let admin = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/admin/incidents", get(list))
        .route(
            "/admin/incidents/{name}",
            get(show).put(switch_on).delete(switch_off),
        )
        .with_state(Ops {
            service,
            incidents,
            readiness,
        })
        .merge(crate::metrics::router(metrics.clone()));
    with_standard_layers(admin, HttpLimits::default()).layer(axum::middleware::from_fn_with_state(
        metrics,
        crate::metrics::track_http,
    ))
}

/// Liveness: the process answers. The ops server starts only once the process's
/// services are built (databases migrated, topics created, ports bound).
async fn health(State(ops): State<Ops>) -> Json<Value> {
    Json(json!({ "status": "ok", "service": ops.service }))
}

/// Readiness: 200 `ready`, or 503 `draining` (after SIGTERM) or `unready` naming the
/// database that did not answer.
async fn ready(State(ops): State<Ops>) -> (StatusCode, Json<Value>) {
    if ops.readiness.draining.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining", "service": ops.service })),
        );
    }
    for (name, pool) in &ops.readiness.databases {
        let answered =
            tokio::time::timeout(READY_TIMEOUT, sqlx::query("SELECT 1").execute(pool)).await;
        let problem = match answered {
            Ok(Ok(_)) => continue,
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer within {READY_TIMEOUT:?}"),
        };
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({ "status": "unready", "service": ops.service, "database": name, "error": problem }),
            ),
        );
    }
    (
        StatusCode::OK,
        Json(json!({ "status": "ready", "service": ops.service })),
    )
}

async fn list(State(ops): State<Ops>) -> Json<Vec<Status>> {
    Json(ops.incidents.list())
}

fn unknown(err: crate::incidents::UnknownIncident) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "unknown-incident",
        "Unknown incident",
    )
    .detail(err.to_string())
}

async fn show(State(ops): State<Ops>, Path(name): Path<String>) -> Result<Json<Status>, Problem> {
    ops.incidents.get(&name).map(Json).map_err(unknown)
}

async fn switch_on(
    State(ops): State<Ops>,
    Path(name): Path<String>,
) -> Result<Json<Status>, Problem> {
    ops.incidents.set(&name, true).map(Json).map_err(unknown)
}

async fn switch_off(
    State(ops): State<Ops>,
    Path(name): Path<String>,
) -> Result<Json<Status>, Problem> {
    ops.incidents.set(&name, false).map(Json).map_err(unknown)
}
