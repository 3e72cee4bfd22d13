-- The delivery simulator's schedule: each confirmed order moves to its next stage
-- when due_at passes (confirmed → preparing → out_for_delivery → delivered).
CREATE TABLE deliveries (
    order_id       TEXT PRIMARY KEY,
    stage          TEXT NOT NULL,
    due_at         TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    last_event_id  TEXT NOT NULL   -- causation of the next event
);

CREATE INDEX deliveries_due ON deliveries (due_at) WHERE stage <> 'delivered';
