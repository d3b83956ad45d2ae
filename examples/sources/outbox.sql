-- Switchyard's outbox, for publishing in the application's own transactions.
-- Run it once in the application's database (PostgreSQL 13 or later):
--
--   psql "$APP_DATABASE_URL" -v ON_ERROR_STOP=1 -f examples/sources/outbox.sql
--
-- It creates, in the first schema of the search_path (run
-- `SET search_path TO app;` first, or use psql's -c, to choose another):
--   switchyard_outbox         the rows Switchyard reads; it deletes each once
--                             its event is stored
--   switchyard_dead_letters   messages whose tenant Switchyard does not know
--   switchyard_notify()       a trigger function that wakes Switchyard at commit
--   switchyard_publish(...)   what the application calls inside its transaction
--
-- Then, inside any transaction of the application:
--   SELECT switchyard_publish('acme', 'order:42', 'order.paid', '{"total": 990}');
-- A rolled-back transaction publishes nothing. The fifth argument, an
-- idempotency key, makes a retried call publish once.

BEGIN;

CREATE TABLE IF NOT EXISTS switchyard_outbox (
    id              bigserial PRIMARY KEY,
    -- The writing transaction: rows are read in this order, each only once
    -- every transaction that started writing before it has ended.
    switchyard_xid  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    tenant          text        NOT NULL,
    topic           text        NOT NULL,
    type            text        NOT NULL,
    data            jsonb       NOT NULL DEFAULT '{}',
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS switchyard_outbox_order ON switchyard_outbox (switchyard_xid, id);

CREATE TABLE IF NOT EXISTS switchyard_dead_letters (
    id     bigserial   PRIMARY KEY,
    source text        NOT NULL,
    origin text        NOT NULL,
    reason text        NOT NULL,
    raw    text        NOT NULL,
    at     timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION switchyard_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('switchyard', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS switchyard_notify ON switchyard_outbox;
CREATE TRIGGER switchyard_notify AFTER INSERT ON switchyard_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION switchyard_notify();

CREATE OR REPLACE FUNCTION switchyard_publish(
    p_tenant text,
    p_topic text,
    p_type text,
    p_data jsonb DEFAULT '{}',
    p_idempotency_key text DEFAULT NULL
) RETURNS bigint
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    INSERT INTO switchyard_outbox (tenant, topic, type, data, idempotency_key)
    VALUES (p_tenant, p_topic, p_type, coalesce(p_data, '{}'), p_idempotency_key)
    RETURNING id
$$;

COMMIT;

-- Debezium's outbox table instead (id uuid, aggregatetype, aggregateid, type,
-- payload): keep it and add Switchyard's two columns and the trigger, then
-- configure the source with `table = "outbox"`, `preset = "debezium"` and a
-- `tenant` (topic `{aggregatetype}:{aggregateid}`, type `type`, data `payload`).
-- Adding a column with this default rewrites the table once.
--
--   ALTER TABLE outbox
--       ADD COLUMN switchyard_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
--       ADD COLUMN switchyard_seq bigserial;
--   CREATE INDEX outbox_switchyard_order ON outbox (switchyard_xid, switchyard_seq);
--   CREATE TRIGGER switchyard_notify AFTER INSERT ON outbox
--       FOR EACH STATEMENT EXECUTE FUNCTION switchyard_notify();
