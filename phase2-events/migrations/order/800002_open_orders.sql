-- The order relay's flow window counts the orders not final yet before each batch
-- it publishes (services/order.rs, OPEN_ORDERS). Only those rows are indexed, so the
-- count reads the orders under way, not every order ever placed.
CREATE INDEX orders_open ON orders (status) WHERE status NOT IN ('delivered', 'cancelled');
