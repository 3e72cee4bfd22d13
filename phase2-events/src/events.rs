//! Events and their envelope.
//!
//! Every event travels in the same envelope, so any consumer can de-duplicate
//! (`event_id`), route (`event_type`), keep order (`order_id` is the partition key:
//! all events of one order land on one partition, in order) and follow a flow across
//! services (`correlation_id` = the flow, `causation_id` = the event that caused this
//! one, `traceparent` = W3C trace context, filled in when phase 3 traces).
//!
//! On the wire: key = order id, value = the JSON envelope, and the envelope's
//! identifying fields repeated as Kafka headers so tools can filter without parsing.

use chrono::{DateTime, Utc};
use common::domain::OrderId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An event whose payload is not what its `event_type` says.
#[derive(Debug, thiserror::Error)]
#[error("unreadable {event_type} payload: {source}")]
pub struct DecodeError {
    pub event_type: String,
    #[source]
    pub source: serde_json::Error,
}

/// The envelope around every event payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per event (UUIDv7); consumers remember the ones they processed.
    pub event_id: Uuid,
    /// e.g. `OrderPlaced`; says how to read `payload`.
    pub event_type: String,
    /// The partition key.
    pub order_id: OrderId,
    /// One id for the whole flow of an order, from the HTTP request to delivery.
    pub correlation_id: String,
    /// The `event_id` of the event that caused this one (`None` for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    /// W3C trace context (`00-<trace id>-<span id>-<flags>`), when tracing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub payload: serde_json::Value,
}

impl Envelope {
    /// A new event that starts a flow.
    pub fn new(
        event_type: &str,
        order_id: OrderId,
        correlation_id: &str,
        payload: serde_json::Value,
    ) -> Self {
        Envelope {
            event_id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            order_id,
            correlation_id: correlation_id.to_owned(),
            causation_id: None,
            occurred_at: common::db::now(),
            // The span this event is made in (the HTTP request, the consumer handling
            // its cause), so the next service continues the same trace.
            traceparent: common::telemetry::current_traceparent(),
            payload,
        }
    }

    /// The trace id in `traceparent` (32 hex digits), the id a trace viewer finds
    /// the order's whole flow by.
    pub fn trace_id(&self) -> Option<&str> {
        let mut fields = self.traceparent.as_deref()?.split('-');
        let (_version, trace_id) = (fields.next()?, fields.next()?);
        (trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(trace_id)
    }

    /// A new event caused by `self`: same flow, same order, `causation_id` = self.
    pub fn caused(&self, event_type: &str, payload: serde_json::Value) -> Self {
        Envelope {
            causation_id: Some(self.event_id),
            traceparent: common::telemetry::current_traceparent().or(self.traceparent.clone()),
            ..Envelope::new(event_type, self.order_id, &self.correlation_id, payload)
        }
    }

    /// The payload as `T`. An unreadable payload will never become readable: in a
    /// handler, `?` makes it a permanent failure (`HandleError`'s `From`), and the
    /// message goes to the dead-letter topic.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, DecodeError> {
        serde_json::from_value(self.payload.clone()).map_err(|source| DecodeError {
            event_type: self.event_type.clone(),
            source,
        })
    }

    /// Kafka headers carrying the identifying fields.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("event_id", self.event_id.to_string()),
            ("event_type", self.event_type.clone()),
            ("correlation_id", self.correlation_id.clone()),
        ];
        if let Some(causation) = self.causation_id {
            headers.push(("causation_id", causation.to_string()));
        }
        if let Some(traceparent) = &self.traceparent {
            headers.push(("traceparent", traceparent.clone()));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caused_event_continues_the_flow() {
        let order = OrderId::new();
        let placed = Envelope::new(
            "OrderPlaced",
            order,
            "req-1",
            serde_json::json!({"total_cents": 100}),
        );
        let paid = placed.caused("PaymentCompleted", serde_json::json!({}));
        assert_eq!(paid.order_id, order);
        assert_eq!(paid.correlation_id, "req-1");
        assert_eq!(paid.causation_id, Some(placed.event_id));
        assert_ne!(paid.event_id, placed.event_id);
    }

    #[test]
    fn the_trace_id_is_read_from_a_well_formed_traceparent_only() {
        let mut event = Envelope::new("OrderPlaced", OrderId::new(), "c", serde_json::json!({}));
        event.traceparent =
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned());
        assert_eq!(event.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        event.traceparent = Some("00-not-a-trace".to_owned());
        assert_eq!(event.trace_id(), None);
        event.traceparent = None;
        assert_eq!(event.trace_id(), None);
    }

    #[test]
    fn the_envelope_round_trips_through_json() {
        let event = Envelope::new(
            "OrderPlaced",
            OrderId::new(),
            "c",
            serde_json::json!({"x": 1}),
        );
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), event);
        assert!(
            !text.contains("causation_id"),
            "absent optional fields are omitted"
        );
    }
}
