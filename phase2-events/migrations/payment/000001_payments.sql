-- The payment service's own record of each order's payment: what it did, so that
-- a redelivered or late event never charges twice and a cancellation knows what to
-- give back.
CREATE TABLE payments (
    order_id     TEXT PRIMARY KEY,
    -- captured | declined | refunded | voided (cancelled before any charge)
    status       TEXT NOT NULL,
    charge_id    TEXT,
    amount_cents BIGINT NOT NULL,
    updated_at   TEXT NOT NULL
);
