-- The trace of the order (W3C traceparent of the event that confirmed it), so the
-- ticker's stage events continue it instead of starting traces of their own.
ALTER TABLE deliveries ADD COLUMN traceparent TEXT;
