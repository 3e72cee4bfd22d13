-- The provider is no longer called inside the consumer's transaction. The consumer
-- only writes down what is to be done; the payment worker (src/services/payment.rs)
-- calls the provider with no transaction open and writes down what it answered.
--
--   pending              a charge is to be made (or was tried, outcome unknown)
--   captured / declined  the provider decided
--   refunded / voided    compensated (voided: cancelled before money was taken)
--
-- A row with `cancel` set belongs to a cancelled order: the worker gives back what
-- was captured. `due_at` says when the worker acts next (NULL: nothing left to do);
-- `leased_until` marks a row a worker is calling the provider for, so that no other
-- worker acts on it meanwhile (a worker that died lets its lease run out, and the
-- call is made again — with the same idempotency key, so the provider answers from
-- its records).
ALTER TABLE payments ADD COLUMN request TEXT;        -- the OrderPlaced envelope (JSON): what to charge; the cause of the answer
ALTER TABLE payments ADD COLUMN cancel TEXT;         -- the OrderCancelled envelope (JSON), once the order is cancelled
ALTER TABLE payments ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;  -- calls to the provider so far
ALTER TABLE payments ADD COLUMN due_at TEXT;
ALTER TABLE payments ADD COLUMN leased_until TEXT;

CREATE INDEX payments_due ON payments (due_at) WHERE due_at IS NOT NULL;

-- Wakes the worker when work becomes due; delivered at commit, and once per
-- transaction however many rows it touched.
CREATE FUNCTION payments_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('payments_due', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER payments_notify AFTER INSERT OR UPDATE OF due_at ON payments
    FOR EACH STATEMENT EXECUTE FUNCTION payments_notify();
