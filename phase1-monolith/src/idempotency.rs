//! Idempotency keys: the same request twice must have the effect of once.
//!
//! A client that times out cannot know whether its order went through, so it
//! retries — with the same `Idempotency-Key`. The server must then answer with the
//! *first* response instead of creating (and charging) a second order:
//!
//! 1. `claim` inserts `(key, fingerprint)` with `ON CONFLICT DO NOTHING`, in the
//!    same transaction as the order. One row affected: this request is first.
//! 2. Zero rows: the key was used. A different body under the same key is a client
//!    bug (422). The same body waits for the first request's saved response and
//!    replays it — this is what makes two *concurrent* identical requests safe.
//! 3. When the first request finishes, `save_response` stores its status and body.

use anyhow::Context;
use axum::http::{HeaderMap, StatusCode};
use common::domain::OrderId;
use common::http::Problem;
use sqlx::{Any, AnyPool, Row, Transaction};

pub const HEADER: &str = "idempotency-key";

/// A client-chosen key: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key from the request headers, if any. A malformed key is a 400.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, Problem> {
        let Some(value) = headers.get(HEADER) else {
            return Ok(None);
        };
        let bad = || {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-idempotency-key",
                "Invalid Idempotency-Key",
            )
            .detail("Idempotency-Key must be 1 to 255 visible ASCII characters")
        };
        let text = value.to_str().map_err(|_| bad())?;
        let ok = (1..=255).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Some(IdempotencyKey(text.to_owned())))
        } else {
            Err(bad())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The header as the OpenAPI document describes it (the parsing is above).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyHeader {
    /// Makes a retry safe: the same key and body answer with the first response
    /// (`Idempotent-Replayed: true`); nothing is charged twice. A different body
    /// under a used key is a 422.
    #[param(
        rename = "idempotency-key",
        required = false,
        min_length = 1,
        max_length = 255,
        pattern = "^[\\x21-\\x7e]+$"
    )]
    pub idempotency_key: String,
}

/// What the database remembers about a key.
#[derive(Debug, Clone)]
pub struct Saved {
    pub fingerprint: String,
    pub order_id: OrderId,
    /// `(status, body)` once the first request has finished.
    pub response: Option<(u16, String)>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Claims `key` inside the order's transaction. `false` = already claimed.
pub async fn claim(
    tx: &mut Transaction<'_, Any>,
    key: &str,
    fingerprint: &str,
    order_id: OrderId,
    now: &str,
) -> anyhow::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (key, request_fingerprint, order_id, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(fingerprint)
    .bind(order_id.to_string())
    .bind(now)
    .execute(&mut **tx)
    .await
    .context("claiming idempotency key")?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn load(pool: &AnyPool, key: &str) -> anyhow::Result<Option<Saved>> {
    let row = sqlx::query(
        "SELECT request_fingerprint, order_id, response_status, response_body, created_at \
         FROM idempotency_keys WHERE key = $1",
    )
    .bind(key)
    .fetch_optional(pool)
    .await
    .context("reading idempotency key")?;
    let Some(row) = row else { return Ok(None) };
    let status: Option<i64> = row.try_get("response_status")?;
    let body: Option<String> = row.try_get("response_body")?;
    Ok(Some(Saved {
        fingerprint: row.try_get("request_fingerprint")?,
        order_id: row.try_get::<String, _>("order_id")?.parse()?,
        response: status.zip(body).map(|(s, b)| (s as u16, b)),
        created_at: common::db::parse_timestamp(&row.try_get::<String, _>("created_at")?)?,
    }))
}

/// Saves the first response for `key`. Only the first save wins. Takes the pool, or
/// a transaction (phase 2 saves the response in the order's own transaction).
pub async fn save_response<'e>(
    executor: impl sqlx::Executor<'e, Database = Any>,
    key: &str,
    status: StatusCode,
    body: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE idempotency_keys SET response_status = $1, response_body = $2 \
         WHERE key = $3 AND response_status IS NULL",
    )
    .bind(i64::from(status.as_u16()))
    .bind(body)
    .bind(key)
    .execute(executor)
    .await
    .context("saving idempotent response")?;
    Ok(())
}
