-- Stock per menu item. The CHECK is the last line of defence against overselling;
-- the first is the row lock taken before the count is read (SELECT … FOR UPDATE).
CREATE TABLE stock (
    sku       TEXT PRIMARY KEY,
    available BIGINT NOT NULL CHECK (available >= 0)
);

INSERT INTO stock (sku, available) VALUES
    ('pizza-margherita', 1000), ('pizza-diavola', 1000), ('burger-classic', 1000),
    ('ramen-shoyu', 1000), ('salad-caesar', 1000), ('fries', 1000),
    ('tiramisu', 1000), ('cola', 1000), ('water', 1000);

-- One row per order the service has decided about.
CREATE TABLE reservations (
    order_id   TEXT PRIMARY KEY,
    -- reserved | rejected (out of stock) | released (compensated) | voided (cancelled first)
    status     TEXT NOT NULL,
    lines      TEXT NOT NULL,   -- JSON [{"sku":…,"qty":…}]
    updated_at TEXT NOT NULL
);
