//! The reference for exercise 6: publish, wait for the acknowledgement, then mark
//! exactly what was acknowledged. Phase 2's `Relay` (phase2-events/src/relay.rs) does
//! the same with the sends pipelined, a leader lock and LISTEN/NOTIFY.

use super::{OutboxRelay, Publish};
use sqlx::{AnyPool, Row};

#[derive(Debug)]
pub struct Relay {
    pool: AnyPool,
}

impl OutboxRelay for Relay {
    fn new(pool: AnyPool) -> Self {
        Relay { pool }
    }

    async fn relay_batch(&self, publisher: &dyn Publish, limit: i64) -> anyhow::Result<usize> {
        let rows = sqlx::query(
            "SELECT id, topic, message_key, envelope FROM outbox \
             WHERE published_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;

        // 1. Publish in id order; a row counts only once the broker acknowledged it.
        //    On the first failure stop: the rest keep their order for the next batch.
        let mut acknowledged: Vec<i64> = Vec::with_capacity(rows.len());
        let mut failure = None;
        for row in &rows {
            let topic: String = row.try_get("topic")?;
            let key: String = row.try_get("message_key")?;
            let envelope: String = row.try_get("envelope")?;
            match publisher.publish(&topic, &key, &envelope).await {
                Ok(()) => acknowledged.push(row.try_get("id")?),
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }

        // 2. Mark exactly those ids. A crash before this line leaves them unmarked:
        //    the next relay sends them again (a duplicate, never a loss).
        let mut tx = self.pool.begin().await?;
        let now = common::db::timestamp(common::db::now());
        for id in &acknowledged {
            sqlx::query("UPDATE outbox SET published_at = $1 WHERE id = $2")
                .bind(&now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;

        match failure {
            Some(err) => Err(err.context(format!(
                "publishing stopped after {} rows",
                acknowledged.len()
            ))),
            None => Ok(acknowledged.len()),
        }
    }
}
