//! The reference for exercise 7. Phase 2's consumer does the same inside
//! `EventConsumer::process` (phase2-events/src/consumer.rs), plus the retry topic for
//! transient failures.

use super::{Apply, Envelope, HandleError, Incoming, PoisonRouter, Publish, Routed};

#[derive(Debug)]
pub struct Router;

impl PoisonRouter for Router {
    fn new() -> Self {
        Router
    }

    async fn route(
        &self,
        message: Incoming<'_>,
        apply: &dyn Apply,
        publish: &dyn Publish,
    ) -> anyhow::Result<Routed> {
        // Decide: applied, or permanently unprocessable (and why)?
        let reason = match message.payload.map(serde_json::from_slice::<Envelope>) {
            None => "empty message".to_owned(),
            Some(Err(err)) => format!("unreadable envelope: {err}"),
            Some(Ok(event)) => match apply.apply(&event).await {
                Ok(()) => return Ok(Routed::Handled),
                Err(HandleError::Permanent(reason)) => reason,
                // Might work later: not poison. Err → the message is read again.
                Err(err @ HandleError::Transient(_)) => return Err(err.into()),
            },
        };
        // Set it aside, unchanged, with the reason and its origin; only once the
        // broker has it may the consumer commit past it.
        let headers = [
            ("dlq_reason", reason),
            ("dlq_source_topic", message.topic.to_owned()),
            ("dlq_source_partition", message.partition.to_string()),
            ("dlq_source_offset", message.offset.to_string()),
        ];
        let dlq = phase2_events::consumer::dlq_topic(message.topic);
        publish
            .publish(&dlq, message.key, message.payload, &headers)
            .await?;
        Ok(Routed::DeadLettered)
    }
}
