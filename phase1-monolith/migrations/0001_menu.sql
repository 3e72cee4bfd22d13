-- The menu: what can be ordered, at what price.
--
-- All SQL in phase 1 is portable: it runs unchanged on SQLite (the zero-setup
-- default) and PostgreSQL. Hence TEXT ids and timestamps and BIGINT cents.
CREATE TABLE menu_items (
    sku         TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    -- Integer cents: money never goes through floating point.
    price_cents BIGINT NOT NULL CHECK (price_cents > 0)
);

INSERT INTO menu_items (sku, name, price_cents) VALUES
    ('pizza-margherita', 'Pizza Margherita',       1150),
    ('pizza-diavola',    'Pizza Diavola',          1350),
    ('burger-classic',   'Classic Burger',         1090),
    ('ramen-shoyu',      'Shoyu Ramen',            1290),
    ('salad-caesar',     'Caesar Salad',            950),
    ('fries',            'Fries',                   390),
    ('tiramisu',         'Tiramisu',                620),
    ('cola',             'Cola 0.33 l',             290),
    ('water',            'Sparkling Water 0.5 l',   190);
