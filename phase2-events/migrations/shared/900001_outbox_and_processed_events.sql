-- Shared by every phase-2 service database (PostgreSQL). Numbered 900001+ so these
-- migrations never collide with a service's own (run with ignore_missing).

-- The transactional outbox: an event is inserted in the same transaction as the
-- state change it announces, so both happen or neither does. The relay publishes
-- rows to Kafka and then sets published_at.
CREATE TABLE outbox (
    id           BIGSERIAL PRIMARY KEY,   -- publish order
    topic        TEXT NOT NULL,
    message_key  TEXT NOT NULL,           -- the order id: the partition key
    event_id     TEXT NOT NULL UNIQUE,
    event_type   TEXT NOT NULL,
    envelope     TEXT NOT NULL,           -- the JSON envelope, sent as the message value
    created_at   TEXT NOT NULL,
    published_at TEXT                     -- NULL until the broker acknowledged it
);

-- The relay's question, "what is not published yet, oldest first?", stays cheap
-- however many published rows accumulate.
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Wake the relay at commit time instead of making it poll hard.
CREATE FUNCTION outbox_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Idempotent consumers: an event's effect and the record that it was processed are
-- written in one transaction; a redelivered event finds its record and is skipped.
CREATE TABLE processed_events (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
