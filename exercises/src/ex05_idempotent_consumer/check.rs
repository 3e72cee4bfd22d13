//! The checker of exercise 5, against a real PostgreSQL database and a real topic.
//!
//! The handler is a loyalty-points ledger: every event it applies appends one row,
//! so a duplicate effect is a row too many — visible, countable, and impossible to
//! explain away.

use super::{Effect, Envelope, HandleError, Handler, IdempotentEffect, Verdict};
use crate::infra::{self, Database, Kafka};
use crate::{Failure, ensure};
use common::domain::OrderId;
use phase2_events::consumer::{EventConsumer, dlq_topic, retry_topic};
use sqlx::{Any, AnyPool, Row, Transaction};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

const CONSUMER: &str = "loyalty-service";

/// Appends `(order_id, event_id, 10 points)` to `points_ledger`, and can fail in
/// the ways a real handler does:
///
/// * while `crash_after_effect` is above zero, a call writes its row and then fails
///   transiently;
/// * an event whose payload says `"garbled": true` writes its row and then fails
///   permanently;
/// * with `die_after_effect` armed, a call writes its row, reports its database
///   session, and never returns: the checker then kills the session and the task —
///   the process died mid-handler, and none of its code runs again.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    crash_after_effect: Arc<AtomicU32>,
    die_after_effect: Arc<Mutex<Option<oneshot::Sender<i32>>>>,
}

impl Handler for Ledger {
    async fn handle(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &Envelope,
    ) -> Result<(), HandleError> {
        sqlx::query("INSERT INTO points_ledger (order_id, event_id, points) VALUES ($1, $2, 10)")
            .bind(event.order_id.to_string())
            .bind(event.event_id.to_string())
            .execute(&mut **tx)
            .await
            .map_err(|err| HandleError::Transient(err.into()))?;
        if event.payload.get("garbled").is_some() {
            return Err(HandleError::Permanent(
                "unreadable OrderDelivered payload: garbled".into(),
            ));
        }
        let crash = self
            .crash_after_effect
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if crash {
            return Err(HandleError::Transient(anyhow::anyhow!(
                "injected fault: the handler wrote its effect, then failed"
            )));
        }
        let die = self.die_after_effect.lock().unwrap().take();
        if let Some(report) = die {
            let pid: i32 = sqlx::query("SELECT pg_backend_pid() AS pid")
                .fetch_one(&mut **tx)
                .await
                .and_then(|row| row.try_get("pid"))
                .map_err(|err| HandleError::Transient(err.into()))?;
            let _ = report.send(pid);
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// The ledger, and a trigger that makes the next `processed_events` insert of one
/// chosen event fail once (a crash while recording). A sequence counts the shots:
/// `nextval` is not rolled back with the failed transaction, so it fails only once.
const SCHEMA: &[&str] = &[
    "CREATE TABLE points_ledger (order_id TEXT NOT NULL, event_id TEXT NOT NULL, points INT NOT NULL)",
    "CREATE TABLE exercise_fault (event_id TEXT PRIMARY KEY)",
    "CREATE SEQUENCE exercise_fault_shots",
    "CREATE FUNCTION exercise_fail_once() RETURNS trigger AS $$
     BEGIN
         IF EXISTS (SELECT 1 FROM exercise_fault WHERE event_id = NEW.event_id)
            AND nextval('exercise_fault_shots') = 1 THEN
             RAISE EXCEPTION 'injected fault: the process died while recording event %', NEW.event_id;
         END IF;
         RETURN NEW;
     END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER exercise_fail_once BEFORE INSERT ON processed_events
     FOR EACH ROW EXECUTE FUNCTION exercise_fail_once()",
];

pub fn check<C: IdempotentEffect<Ledger> + 'static>() -> Result<(), Failure> {
    infra::block_on(async {
        let db = Database::create(Vec::new()).await?;
        let result = scenarios::<C>(&db.pool).await;
        db.close().await;
        result
    })
}

async fn scenarios<C: IdempotentEffect<Ledger> + 'static>(pool: &AnyPool) -> Result<(), Failure> {
    for statement in SCHEMA {
        sqlx::query(sqlx::AssertSqlSafe(*statement))
            .execute(pool)
            .await
            .map_err(|err| Failure(format!("preparing the check's tables: {err}")))?;
    }
    let ledger = Ledger::default();
    let effect = Arc::new(C::new(pool.clone(), ledger.clone()));

    a_new_event_is_applied_and_recorded(&*effect, pool).await?;
    a_redelivery_is_a_duplicate(&*effect, pool).await?;
    another_consumer_is_not_a_duplicate(&*effect).await?;
    a_failure_after_the_effect_leaves_no_trace(&*effect, &ledger, pool).await?;
    a_permanent_failure_is_dead_lettered(&*effect, pool).await?;
    a_crash_while_recording_leaves_no_trace(&*effect, pool).await?;
    the_process_dies_mid_handler(effect.clone(), &ledger, pool).await?;
    concurrent_redeliveries_apply_once(effect, pool).await?;
    through_the_real_consumer::<C>(pool).await
}

fn event() -> Envelope {
    Envelope::new(
        "OrderDelivered",
        OrderId::new(),
        "exercise-5",
        serde_json::json!({"status": "delivered"}),
    )
}

async fn ledger_rows(pool: &AnyPool, event: &Envelope) -> Result<i64, Failure> {
    sqlx::query("SELECT COUNT(*) AS n FROM points_ledger WHERE event_id = $1")
        .bind(event.event_id.to_string())
        .fetch_one(pool)
        .await
        .and_then(|row| row.try_get("n"))
        .map_err(|err| Failure(format!("reading the ledger: {err}")))
}

async fn recorded(pool: &AnyPool, consumer: &str, event: &Envelope) -> Result<bool, Failure> {
    sqlx::query("SELECT 1 AS one FROM processed_events WHERE consumer = $1 AND event_id = $2")
        .bind(consumer)
        .bind(event.event_id.to_string())
        .fetch_optional(pool)
        .await
        .map(|row| row.is_some())
        .map_err(|err| Failure(format!("reading processed_events: {err}")))
}

async fn apply(effect: &impl Effect, consumer: &str, event: &Envelope) -> Result<Verdict, String> {
    effect
        .apply(consumer, event)
        .await
        .map_err(|err| format!("{err}"))
}

async fn a_new_event_is_applied_and_recorded(
    effect: &impl Effect,
    pool: &AnyPool,
) -> Result<(), Failure> {
    let event = event();
    let verdict = apply(effect, CONSUMER, &event).await;
    ensure(verdict == Ok(Verdict::Applied), || {
        format!("a new event must be Applied, got {verdict:?}")
    })?;
    let rows = ledger_rows(pool, &event).await?;
    ensure(rows == 1, || {
        format!("a new event wrote {rows} ledger rows, expected 1")
    })?;
    ensure(recorded(pool, CONSUMER, &event).await?, || {
        "the event was applied but no processed_events row records it: a redelivery would apply \
         it again"
            .into()
    })
}

async fn a_redelivery_is_a_duplicate(effect: &impl Effect, pool: &AnyPool) -> Result<(), Failure> {
    let event = event();
    let first = apply(effect, CONSUMER, &event).await;
    let again = apply(effect, CONSUMER, &event).await;
    let rows = ledger_rows(pool, &event).await?;
    ensure(rows == 1 && again == Ok(Verdict::Duplicate), || {
        format!(
            "the same event delivered twice was answered {first:?} then {again:?} and wrote {rows} \
             ledger rows; the redelivery must be Ok(Duplicate) with 1 row"
        )
    })
}

async fn another_consumer_is_not_a_duplicate(effect: &impl Effect) -> Result<(), Failure> {
    let event = event();
    let _ = apply(effect, CONSUMER, &event).await;
    let other = apply(effect, "analytics-service", &event).await;
    ensure(other == Ok(Verdict::Applied), || {
        format!(
            "an event the loyalty-service consumer processed is new to analytics-service, but it \
             was answered {other:?}: a processed event is remembered per (consumer, event_id)"
        )
    })
}

async fn a_failure_after_the_effect_leaves_no_trace(
    effect: &impl Effect,
    ledger: &Ledger,
    pool: &AnyPool,
) -> Result<(), Failure> {
    let event = event();
    ledger.crash_after_effect.store(1, Ordering::SeqCst);
    let crashed = apply(effect, CONSUMER, &event).await;
    ledger.crash_after_effect.store(0, Ordering::SeqCst);
    let rows = ledger_rows(pool, &event).await?;
    ensure(rows == 0, || {
        format!(
            "the handler wrote its effect and then failed ({crashed:?}), yet {rows} ledger row \
             survived: the effect must be rolled back with everything else"
        )
    })?;
    ensure(matches!(crashed, Ok(Verdict::Retry(_)) | Err(_)), || {
        format!("a transient handler failure must be retried (Ok(Retry(..))), got {crashed:?}")
    })?;
    ensure(!recorded(pool, CONSUMER, &event).await?, || {
        "the handler failed, yet the event is recorded as processed: the redelivery will be \
         skipped and the points never awarded — data lost"
            .into()
    })?;
    redelivery_applies_once(effect, pool, &event, "the failed attempt").await
}

async fn a_crash_while_recording_leaves_no_trace(
    effect: &impl Effect,
    pool: &AnyPool,
) -> Result<(), Failure> {
    let event = event();
    sqlx::query("INSERT INTO exercise_fault (event_id) VALUES ($1)")
        .bind(event.event_id.to_string())
        .execute(pool)
        .await
        .map_err(|err| Failure(format!("arming the fault: {err}")))?;
    let crashed = apply(effect, CONSUMER, &event).await;
    let rows = ledger_rows(pool, &event).await?;
    ensure(rows == 0, || {
        format!(
            "recording the event in processed_events failed ({crashed:?}), yet the handler's \
             effect was kept ({rows} ledger row): the redelivery will apply it a second time. \
             Effect and record must commit together, in one transaction"
        )
    })?;
    redelivery_applies_once(effect, pool, &event, "recording failed once").await
}

/// After a failed attempt, the redelivery applies the event: `Applied`, one row.
async fn redelivery_applies_once(
    effect: &impl Effect,
    pool: &AnyPool,
    event: &Envelope,
    after: &str,
) -> Result<(), Failure> {
    let redelivered = apply(effect, CONSUMER, event).await;
    let rows = ledger_rows(pool, event).await?;
    ensure(redelivered == Ok(Verdict::Applied) && rows == 1, || {
        format!(
            "after {after}, the redelivery was answered {redelivered:?} with {rows} ledger rows; \
             it must be Applied, exactly once"
        )
    })
}

async fn a_permanent_failure_is_dead_lettered(
    effect: &impl Effect,
    pool: &AnyPool,
) -> Result<(), Failure> {
    let mut event = event();
    event.payload = serde_json::json!({"garbled": true});
    let verdict = apply(effect, CONSUMER, &event).await;
    let rows = ledger_rows(pool, &event).await?;
    ensure(
        matches!(verdict, Ok(Verdict::DeadLetter(_))) && rows == 0,
        || {
            format!(
                "the handler wrote its row, then failed permanently (HandleError::Permanent): that must \
             be Ok(DeadLetter(reason)) with the row rolled back; got {verdict:?} and {rows} ledger \
             rows. Retrying what can never succeed blocks the partition (exercise 7)"
            )
        },
    )?;
    ensure(!recorded(pool, CONSUMER, &event).await?, || {
        "a dead-lettered event was recorded as processed: replaying it after a fix would be \
         skipped as a duplicate"
            .into()
    })
}

async fn the_process_dies_mid_handler<E: Effect>(
    effect: Arc<E>,
    ledger: &Ledger,
    pool: &AnyPool,
) -> Result<(), Failure> {
    let event = event();
    let (report, session) = oneshot::channel();
    *ledger.die_after_effect.lock().unwrap() = Some(report);
    let running = {
        let (effect, event) = (effect.clone(), event.clone());
        tokio::spawn(async move { apply(&*effect, CONSUMER, &event).await })
    };
    let pid = match tokio::time::timeout(Duration::from_secs(30), session).await {
        Ok(Ok(pid)) => pid,
        _ => {
            running.abort();
            return Err(Failure(
                "apply() never called the handler for a new event".into(),
            ));
        }
    };
    // The process dies: the database ends its session, rolling back whatever was not
    // committed, and none of the process's code — no cleanup, no compensation — runs.
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(pool)
        .await
        .map_err(|err| Failure(format!("killing the handler's session: {err}")))?;
    running.abort();
    let _ = running.await;
    // The redelivery, after the restart (a consumer retries a failed attempt).
    let mut verdict = Err(String::new());
    for _ in 0..3 {
        verdict = apply(&*effect, CONSUMER, &event).await;
        if verdict.is_ok() {
            break;
        }
    }
    let rows = ledger_rows(pool, &event).await?;
    ensure(verdict == Ok(Verdict::Applied) && rows == 1, || {
        format!(
            "the process died after the handler wrote its effect, before anything committed; the \
             redelivery was answered {verdict:?} and the ledger has {rows} rows for the event \
             (expected Applied, 1). Whatever committed before that moment — a claim in a \
             transaction of its own — survived the crash with no effect behind it: one \
             transaction for both"
        )
    })
}

async fn concurrent_redeliveries_apply_once<E: Effect>(
    effect: Arc<E>,
    pool: &AnyPool,
) -> Result<(), Failure> {
    const COPIES: usize = 8;
    for round in 1..=3 {
        let event = event();
        let tasks: Vec<_> = (0..COPIES)
            .map(|_| {
                let (effect, event) = (effect.clone(), event.clone());
                tokio::spawn(async move { apply(&*effect, CONSUMER, &event).await })
            })
            .collect();
        let mut verdicts = Vec::new();
        for task in tasks {
            verdicts.push(
                task.await
                    .map_err(|err| Failure(format!("a task panicked: {err}")))?,
            );
        }
        let rows = ledger_rows(pool, &event).await?;
        let applied = verdicts
            .iter()
            .filter(|v| **v == Ok(Verdict::Applied))
            .count();
        let duplicates = verdicts
            .iter()
            .filter(|v| **v == Ok(Verdict::Duplicate))
            .count();
        ensure(
            rows == 1 && applied == 1 && duplicates == COPIES - 1,
            || {
                format!(
                    "round {round}: {COPIES} copies of one event arrived at once; {applied} were \
                 Applied, {duplicates} Duplicate, and the ledger got {rows} rows (verdicts: \
                 {verdicts:?}). Exactly one may apply it: claim the event and apply it in one \
                 transaction, and let the claim itself tell who was first"
                )
            },
        )?;
    }
    Ok(())
}

/// Phase 2's real consumer on a real topic, with the learner's effect plugged in:
/// ten orders, each published twice (a producer retry, a relay crash), must each
/// earn their points exactly once, and the group must commit past all of it.
async fn through_the_real_consumer<C: IdempotentEffect<Ledger> + 'static>(
    pool: &AnyPool,
) -> Result<(), Failure> {
    let kafka = Kafka::create("exercise5", &["orders", "orders.retry", "orders.dlq"]).await?;
    let topic = kafka.name("orders");
    let events: Vec<Envelope> = (0..10).map(|_| event()).collect();
    for copy in 0..2 {
        for event in &events {
            let payload = serde_json::to_vec(event).expect("an envelope serializes");
            kafka
                .send(&topic, &event.order_id.to_string(), Some(&payload), &[])
                .await
                .map_err(|f| Failure(format!("{f} (copy {copy})")))?;
        }
    }
    let shutdown = common::shutdown::CancellationToken::new();
    let group = kafka.name("loyalty");
    let consumer = EventConsumer {
        name: group.clone(),
        brokers: kafka.brokers.clone(),
        instance: None,
        when_unreachable: phase2_events::config::WhenUnreachable::Pause,
        topics: vec![topic.clone()],
        producer: kafka.producer.clone(),
        effect: C::new(pool.clone(), Ledger::default()),
    };
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    let probe = phase2_events::kafka::LagProbe::new(&kafka.brokers, &group, vec![topic.clone()])
        .map_err(|err| Failure(format!("{err:#}")))?;
    let probe = Arc::new(probe);
    let lag = infra::eventually(
        "phase 2's consumer, running your effect, finished the 20 messages (lag 0)",
        Duration::from_secs(60),
        || {
            let probe = probe.clone();
            async move {
                let sample =
                    tokio::task::spawn_blocking(move || probe.sample(Duration::from_secs(5)))
                        .await
                        .ok()?
                        .ok()?;
                // A partition with messages and no commit counts them all as lag.
                let lag: i64 = sample.iter().map(|p| p.lag()).sum();
                (lag == 0).then_some(lag)
            }
        },
    )
    .await;
    shutdown.cancel();
    let stopped = running.await;
    lag?;
    if let Ok(Err(err)) = stopped {
        return Err(Failure(format!(
            "phase 2's consumer stopped with an error: {err:#}"
        )));
    }
    let mut counts = Vec::new();
    for event in &events {
        counts.push(ledger_rows(pool, event).await?);
    }
    let retried = kafka.read_all(&retry_topic(&topic)).await?.len();
    let dead = kafka.read_all(&dlq_topic(&topic)).await?.len();
    ensure(counts.iter().all(|n| *n == 1), || {
        format!(
            "10 events, each delivered twice through a real topic to phase 2's consumer running \
             your effect, earned points {counts:?} times; each must earn them exactly once"
        )
    })?;
    ensure(retried == 0 && dead == 0, || {
        format!(
            "nothing should be retried or dead-lettered, but {retried} retried and {dead} dead-lettered"
        )
    })
}
