//! `/health` and `/ready`: two different questions.
//!
//! * `/health` (liveness, [`common::http::health`]): "is this process able to serve at all?" — no dependency is
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
use serde::Serialize;
use std::time::Duration;

/// What `/ready` reports.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub status: ReadyStatus,
    pub database: DependencyState,
    /// Reported, never a reason to be unready (see the module docs).
    pub payment_breaker: BreakerState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    Ready,
    /// Serving, but the payment breaker is not closed: orders wait in `placed`.
    Degraded,
    NotReady,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DependencyState {
    Up,
    Down,
}

/// Readiness: should traffic come here now? Needs the database (bounded to 2 s).
#[utoipa::path(get, path = "/ready", tag = "health",
    responses(
        (status = 200, description = "Ready, or degraded (payment breaker open)", body = Readiness),
        (status = 503, description = "The database is unreachable", body = Readiness),
    ))]
pub async fn ready(State(app): State<AppState>) -> (StatusCode, Json<Readiness>) {
    // A probe must answer quickly even when the database hangs: bound the check.
    let ping = tokio::time::timeout(Duration::from_secs(2), app.store.ping()).await;
    let database = match ping {
        Ok(Ok(())) => DependencyState::Up,
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness: database unreachable");
            DependencyState::Down
        }
        Err(_elapsed) => {
            tracing::warn!("readiness: database did not answer within 2 s");
            DependencyState::Down
        }
    };
    let payment_breaker = app.payment.breaker().state();
    let (code, status) = match (database, payment_breaker) {
        (DependencyState::Down, _) => (StatusCode::SERVICE_UNAVAILABLE, ReadyStatus::NotReady),
        (_, BreakerState::Closed) => (StatusCode::OK, ReadyStatus::Ready),
        _ => (StatusCode::OK, ReadyStatus::Degraded),
    };
    (
        code,
        Json(Readiness {
            status,
            database,
            payment_breaker,
        }),
    )
}
