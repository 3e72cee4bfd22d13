//! The orders API: `GET /menu`, `POST /orders`, `GET /orders/{id}`.
//!
//! `POST /orders` is the whole phase-1 lesson in one handler:
//! validate and price → **store the order** (`placed`) → charge through the resilient
//! client → settle the order → answer (and save the answer under the idempotency key).
//!
//! | outcome of the payment | order status | HTTP status |
//! |------------------------|--------------|-------------|
//! | captured               | `paid`       | 201 Created |
//! | declined               | `cancelled`  | 201 Created (the order exists; it failed) |
//! | unknown (deadline passed, breaker open) | `placed` | 202 Accepted — the reconciler settles it; poll `Location` |

use crate::idempotency::{self, IdempotencyKey};
use crate::startup::AppState;
use crate::store::{Inserted, OrderStore};
use crate::workflow;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::domain::{
    CustomerId, DomainError, LineItem, MenuItem, NewOrder, Order, OrderId, OrderStatus,
};
use common::http::openapi::{JsonBodyProblems, ServerProblems};
use common::http::{ApiJson, Problem, RequestId};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The body of `POST /orders`. Field types parse on deserialization, so a negative
/// quantity or a malformed sku is rejected (422) before the handler runs.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"customer_id": "alice", "items": [{"sku": "pizza-margherita", "qty": 2}, {"sku": "cola", "qty": 1}]})))]
pub struct PlaceOrder {
    pub customer_id: CustomerId,
    /// One line per sku (a sku twice is refused: put the total on one line).
    #[schema(min_items = 1, max_items = 20)]
    pub items: Vec<LineItem>,
}

/// Everything `POST /orders` can fail with, split by how the client should react.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error(transparent)]
    Invalid(#[from] DomainError),
    #[error("rejected")]
    Rejected(Problem),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl IntoResponse for OrderError {
    fn into_response(self) -> Response {
        match self {
            OrderError::Invalid(err) => {
                let slug = match &err {
                    DomainError::UnknownSku(_) => "unknown-sku",
                    DomainError::EmptyOrder => "empty-order",
                    _ => "invalid-order",
                };
                let mut problem =
                    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, slug, "Invalid order")
                        .detail(err.to_string());
                if let DomainError::UnknownSku(skus) = &err {
                    problem = problem.with("unknown_skus", skus.clone());
                }
                problem.into_response()
            }
            OrderError::Rejected(problem) => problem.into_response(),
            OrderError::Unexpected(err) => {
                // The chain goes to the log (with the request id); the client gets none of it.
                tracing::error!(error = format!("{err:#}"), "unexpected error placing order");
                Problem::internal().into_response()
            }
        }
    }
}

/// A database or serialization failure is nothing the client did: logged, 500.
impl From<sqlx::Error> for OrderError {
    fn from(err: sqlx::Error) -> Self {
        OrderError::Unexpected(err.into())
    }
}

impl From<serde_json::Error> for OrderError {
    fn from(err: serde_json::Error) -> Self {
        OrderError::Unexpected(err.into())
    }
}

impl From<Problem> for OrderError {
    fn from(problem: Problem) -> Self {
        OrderError::Rejected(problem)
    }
}

/// The menu with current prices, sorted by sku.
#[utoipa::path(get, path = "/menu", tag = "orders",
    responses(
        (status = 200, description = "Everything that can be ordered", body = [MenuItem]),
        ServerProblems,
    ))]
pub async fn menu(State(store): State<OrderStore>) -> Result<Json<Vec<MenuItem>>, OrderError> {
    let mut items: Vec<_> = store.menu().await?.into_values().collect();
    items.sort_by(|a, b| a.sku.cmp(&b.sku));
    Ok(Json(items))
}

/// One order, as stored now (poll it after a 202).
#[utoipa::path(get, path = "/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "The order id from `POST /orders` (its `Location` header)")),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 404, description = "No such order (or not an order id)", body = Problem, content_type = "application/problem+json"),
        ServerProblems,
    ))]
pub async fn get_order(
    State(store): State<OrderStore>,
    Path(id): Path<String>,
) -> Result<Json<Order>, OrderError> {
    let not_found = || {
        Problem::new(StatusCode::NOT_FOUND, "order-not-found", "Order not found")
            .detail(format!("no order with id {id}"))
    };
    let order_id: OrderId = id.parse().map_err(|_| not_found())?;
    let order = store.get(order_id).await?.ok_or_else(not_found)?;
    Ok(Json(order))
}

/// Place an order: it is stored (`placed`), charged, settled, and answered.
#[utoipa::path(post, path = "/orders", tag = "orders",
    params(idempotency::IdempotencyHeader),
    request_body = PlaceOrder,
    responses(
        (status = 201, description = "Settled: `paid`, or `cancelled` when the card was declined", body = Order,
            headers(("location" = String, description = "`/orders/{id}`")),
            links(("GetOrder" = (operation_id = "get_order", parameters(("id" = "$response.body#/id")), description = "The order just placed")))),
        (status = 202, description = "Stored, payment in doubt (`placed`): the reconciler settles it; poll `Location`", body = Order,
            headers(("location" = String, description = "`/orders/{id}`")),
            links(("GetOrder" = (operation_id = "get_order", parameters(("id" = "$response.body#/id")), description = "The order just placed")))),
        (status = 409, description = "The first request with this Idempotency-Key is still running; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        (status = 422, description = "Invalid order: unknown sku, a sku twice, a bad field; or an Idempotency-Key reused with a different body", body = Problem, content_type = "application/problem+json"),
        ServerProblems,
    ))]
pub async fn place_order(
    State(app): State<AppState>,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PlaceOrder>,
) -> Result<Response, OrderError> {
    let key = IdempotencyKey::from_headers(&headers)?;
    let menu = app.store.menu().await?;
    let new_order = NewOrder::price(request.customer_id.clone(), &request.items, &menu)?;

    let Some(key) = key else {
        let Inserted::Created(order) = app.store.insert(&new_order, None).await? else {
            unreachable!("no key, no conflict")
        };
        let order = pay(&app, order, &request_id).await?;
        return Ok(respond(&order).into_response());
    };

    let fingerprint = serde_json::to_string(&request)?;
    match app
        .store
        .insert(&new_order, Some((key.as_str(), &fingerprint)))
        .await?
    {
        Inserted::Created(order) => {
            tracing::info!(order_id = %order.id, idempotency_key = key.as_str(), "order placed");
            let order = pay(&app, order, &request_id).await?;
            let (status, body) = respond(&order);
            idempotency::save_response(app.store.pool(), key.as_str(), status, &body.0).await?;
            Ok((status, body).into_response())
        }
        Inserted::KeyAlreadyUsed => replay(&app, &key, &fingerprint).await,
    }
}

async fn pay(app: &AppState, order: Order, request_id: &str) -> anyhow::Result<Order> {
    tracing::info!(order_id = %order.id, total_cents = order.total_cents.get(), "order stored; charging");
    let outcome = app
        .payment
        .charge(order.id, order.total_cents, request_id)
        .await;
    workflow::settle(&app.store, order, &outcome).await
}

/// The response for an order: 201 once settled, 202 while in doubt (phase 2: always,
/// because the order is settled later by events).
pub fn respond(order: &Order) -> (StatusCode, JsonText) {
    let status = if order.status == OrderStatus::Placed {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    (
        status,
        JsonText(
            serde_json::to_string(order).expect("orders always serialize"),
            order.id,
        ),
    )
}

/// A pre-serialized JSON body (so exactly these bytes can be saved and replayed), with
/// `Location: /orders/{id}`.
#[derive(Debug)]
pub struct JsonText(pub String, pub OrderId);

impl IntoResponse for JsonText {
    fn into_response(self) -> Response {
        let mut response = self.0.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(location) = HeaderValue::from_str(&format!("/orders/{}", self.1)) {
            headers.insert(header::LOCATION, location);
        }
        response
    }
}

/// The key was used before: replay the first response, waiting for it if the first
/// request is still running.
async fn replay(
    app: &AppState,
    key: &IdempotencyKey,
    fingerprint: &str,
) -> Result<Response, OrderError> {
    let poll = Duration::from_millis(25);
    loop {
        let saved = idempotency::load(app.store.pool(), key.as_str())
            .await?
            .ok_or_else(|| anyhow::anyhow!("idempotency key vanished"))?;
        if let Some(response) = replay_saved(&saved, key, fingerprint)? {
            return Ok(response);
        }
        let age = (chrono::Utc::now() - saved.created_at)
            .to_std()
            .unwrap_or_default();
        if age >= app.replay_wait {
            return still_unanswered(app, key, saved.order_id).await;
        }
        tokio::time::sleep(poll).await;
    }
}

/// The saved first response for `key`, if the first request has finished. The same
/// key with a different request body is a client bug: 422.
pub fn replay_saved(
    saved: &idempotency::Saved,
    key: &IdempotencyKey,
    fingerprint: &str,
) -> Result<Option<Response>, OrderError> {
    if saved.fingerprint != fingerprint {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency-Key reused with a different request",
        )
        .detail("this key was first used for a different order; use a new key for a new order")
        .into());
    }
    let Some((status, body)) = &saved.response else {
        return Ok(None);
    };
    tracing::info!(order_id = %saved.order_id, idempotency_key = key.as_str(), "replaying saved response");
    let status = StatusCode::from_u16(*status).map_err(anyhow::Error::from)?;
    let mut response = (status, JsonText(body.clone(), saved.order_id)).into_response();
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(Some(response))
}

/// The first request never saved a response (it is very slow, or its process died).
/// If the order has been settled since (by the reconciler), answer with it and save
/// that answer; otherwise tell the client to come back later.
async fn still_unanswered(
    app: &AppState,
    key: &IdempotencyKey,
    order_id: OrderId,
) -> Result<Response, OrderError> {
    let order = app
        .store
        .get(order_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("order {order_id} missing"))?;
    if order.status == OrderStatus::Placed {
        let retry_after = app.replay_wait.as_secs().max(1);
        let mut response = Problem::new(
            StatusCode::CONFLICT,
            "request-in-progress",
            "Request still in progress",
        )
        .detail("the first request with this Idempotency-Key has not finished; retry later")
        .with("order_id", order_id.to_string())
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        return Ok(response);
    }
    let (status, body) = respond(&order);
    idempotency::save_response(app.store.pool(), key.as_str(), status, &body.0).await?;
    Ok((status, body).into_response())
}
