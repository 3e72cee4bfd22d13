//! The ops server: one per process, next to the services' own ports.
//!
//! | route                              | what                                           |
//! |------------------------------------|------------------------------------------------|
//! | `GET /metrics`                     | every metric of the process, OpenMetrics text  |
//! | `GET /health`                      | the process is alive                           |
//! | `GET /ready`                       | the process's services are built and running   |
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
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Ops {
    service: &'static str,
    incidents: Incidents,
}

/// The ops router of a process running `service` (`all`, `order`, …).
pub fn router(service: &'static str, metrics: Metrics, incidents: Incidents) -> Router {
    let admin = Router::new()
        .route("/health", get(health))
        .route("/ready", get(health))
        .route("/admin/incidents", get(list))
        .route(
            "/admin/incidents/{name}",
            get(show).put(switch_on).delete(switch_off),
        )
        .with_state(Ops { service, incidents })
        .merge(crate::metrics::router(metrics.clone()));
    with_standard_layers(admin, HttpLimits::default()).layer(axum::middleware::from_fn_with_state(
        metrics,
        crate::metrics::track_http,
    ))
}

/// Both probes answer the same here: the ops server starts only once the process's
/// services are built (databases migrated, topics created, ports bound).
async fn health(State(ops): State<Ops>) -> Json<Value> {
    Json(json!({ "status": "ok", "service": ops.service }))
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
