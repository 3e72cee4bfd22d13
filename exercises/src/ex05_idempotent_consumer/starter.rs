// Exercise 5: your implementation.
//
// `cargo run -p exercises -- start 5` copies this starter to `exercises/mine/ex05_idempotent_consumer.rs`;
// edit that copy (this file stays as shipped), then `cargo run -p exercises -- check 5`.
//
// The table you have (phase2-events/migrations/shared):
//   processed_events (consumer TEXT, event_id TEXT, processed_at TEXT,
//                     PRIMARY KEY (consumer, event_id))

use super::{Effect, Envelope, HandleError, Handler, IdempotentEffect, Verdict};
use sqlx::AnyPool;

#[derive(Debug)]
pub struct Consumer<H> {
    pool: AnyPool,
    handler: H,
}

impl<H: Handler> IdempotentEffect<H> for Consumer<H> {
    fn new(pool: AnyPool, handler: H) -> Self {
        Consumer { pool, handler }
    }
}

impl<H: Handler> Effect for Consumer<H> {
    async fn apply(&self, consumer: &str, event: &Envelope) -> anyhow::Result<Verdict> {
        let event_id = event.event_id.to_string();

        // TODO(exercise): "have I seen it?" and "remember it" are two steps with a gap
        // between them. What do eight copies of one event, arriving at once, see here?
        let seen =
            sqlx::query("SELECT 1 FROM processed_events WHERE consumer = $1 AND event_id = $2")
                .bind(consumer)
                .bind(&event_id)
                .fetch_optional(&self.pool)
                .await?;
        if seen.is_some() {
            return Ok(Verdict::Duplicate);
        }

        let mut tx = self.pool.begin().await?;
        match self.handler.handle(&mut tx, event).await {
            Ok(()) => tx.commit().await?,
            Err(HandleError::Transient(err)) => {
                tx.rollback().await?;
                return Ok(Verdict::Retry(format!("{err:#}")));
            }
            Err(HandleError::Permanent(reason)) => {
                tx.rollback().await?;
                return Ok(Verdict::DeadLetter(reason));
            }
        }

        // TODO(exercise): the effect is committed; if the process dies before this
        // line (or this INSERT fails), the event is redelivered and applied again.
        sqlx::query(
            "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ($1, $2, $3)",
        )
        .bind(consumer)
        .bind(&event_id)
        .bind(common::db::timestamp(common::db::now()))
        .execute(&self.pool)
        .await?;
        Ok(Verdict::Applied)
    }
}
