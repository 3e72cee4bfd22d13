-- Two lanes in one outbox. An event that continues a flow already under way (it
-- has a cause: OrderPaid after PaymentCompleted, OrderDelivered after
-- DeliveryCompleted, …) is published before an event that starts a new flow
-- (OrderPlaced, which has none). Oldest first regardless, a burst of new orders
-- queues ahead of the status events of the orders in flight: under overload every
-- order waits behind every other, and fewer and fewer finish. Continuing first, the
-- orders in flight finish, and new ones enter the pipeline as fast as it frees up;
-- the rest wait here, accepted and safe, until it does.
--
-- An order's own events keep their order: the events continuing its flow are all
-- written after its OrderPlaced was published and consumed (they react to it), and
-- within a lane rows go out by id.
ALTER TABLE outbox ADD COLUMN starts_flow BOOLEAN NOT NULL DEFAULT FALSE;

DROP INDEX outbox_unpublished;
CREATE INDEX outbox_unpublished ON outbox (starts_flow, id) WHERE published_at IS NULL;
