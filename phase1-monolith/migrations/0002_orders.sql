-- Orders and their lines.
--
-- An order row is written *before* the payment provider is called, in status
-- 'placed'. If the process dies during the call, the row is the evidence that a
-- payment may be in flight; the reconciler finds such rows by (status, updated_at).
CREATE TABLE orders (
    id                  TEXT PRIMARY KEY,            -- UUIDv7 (time-ordered)
    customer_id         TEXT NOT NULL,
    status              TEXT NOT NULL,               -- see common::domain::OrderStatus
    cancellation_reason TEXT,
    total_cents         BIGINT NOT NULL CHECK (total_cents >= 0),
    idempotency_key     TEXT,                        -- the client's Idempotency-Key, if any
    payment_id          TEXT,                        -- the provider's charge id once paid
    version             BIGINT NOT NULL,             -- optimistic concurrency: +1 per change
    created_at          TEXT NOT NULL,               -- RFC 3339, UTC, fixed width: sorts as text
    updated_at          TEXT NOT NULL
);

-- "Which orders are still in doubt, oldest first?"
CREATE INDEX orders_status_updated_at ON orders (status, updated_at);

CREATE TABLE order_items (
    order_id         TEXT NOT NULL REFERENCES orders (id),
    line_no          BIGINT NOT NULL,
    sku              TEXT NOT NULL REFERENCES menu_items (sku),
    name             TEXT NOT NULL,
    qty              BIGINT NOT NULL CHECK (qty > 0),
    -- Copied from the menu when ordering: later price changes do not alter the order.
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, line_no)
);
