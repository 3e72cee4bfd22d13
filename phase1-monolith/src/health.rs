//! `/health` and `/ready`: two different questions.
//!
//! * `/health` (liveness): "is this process able to serve at all?" — no dependency is
//!   checked, because restarting the process would not fix a dependency.
//! * `/ready` (readiness): "should traffic come here now?" — the database is required
//!   (without it no order can be stored), so its absence makes us not ready (503).
//!   The payment breaker is *reported* but does not make us unready: with the
//!   provider down we still accept orders, keep them `placed` and settle them later.
//!   Failing readiness on a shared dependency would take every replica out at once.

use crate::startup::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use common::resilience::BreakerState;
use serde_json::{Value, json};
use std::time::Duration;

pub async fn health() -> &'static str {
    "ok"
}

pub async fn ready(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    // A probe must answer quickly even when the database hangs: bound the check.
    let ping = tokio::time::timeout(Duration::from_secs(2), app.store.ping()).await;
    let database = match ping {
        Ok(Ok(())) => "up",
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness: database unreachable");
            "down"
        }
        Err(_elapsed) => {
            tracing::warn!("readiness: database did not answer within 2 s");
            "down"
        }
    };
    let breaker = app.payment.breaker().state();
    let (code, status) = match (database, breaker) {
        ("down", _) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        (_, BreakerState::Closed) => (StatusCode::OK, "ready"),
        _ => (StatusCode::OK, "degraded"),
    };
    (
        code,
        Json(json!({ "status": status, "database": database, "payment_breaker": breaker })),
    )
}
