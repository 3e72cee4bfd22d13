-- Idempotency keys: "have I seen this request before, and what did I answer?"
--
-- The key row is inserted first, in the same transaction as the order, with
-- INSERT … ON CONFLICT DO NOTHING. Exactly one of two concurrent requests with the
-- same key inserts it; the other sees zero rows affected and, instead of creating a
-- second order, waits for and replays the first one's saved response.
CREATE TABLE idempotency_keys (
    key                 TEXT PRIMARY KEY,
    -- Canonical JSON of the parsed request: the same key with a different body is an
    -- error (422), not a replay.
    request_fingerprint TEXT NOT NULL,
    order_id            TEXT NOT NULL,
    -- The first response, saved once the request finished; NULL while in flight.
    response_status     BIGINT,
    response_body       TEXT,
    created_at          TEXT NOT NULL
);
