-- The order service's database = phase 1's schema (menu, orders, order lines,
-- idempotency keys; applied from phase1-monolith/migrations) + the shared outbox
-- tables + this.

-- Payment and stock reservation run in parallel. When the stock answer arrives
-- first, the order is still `placed`: remember it here, and confirm the order as
-- soon as it is `paid`.
ALTER TABLE orders ADD COLUMN stock_reserved_at TEXT;
