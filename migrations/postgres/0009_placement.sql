-- Tenants on several databases (`SWITCHYARD_DATABASES`).
--
-- `placements` is read in the home database (`DATABASE_URL`) only: which
-- database holds each tenant, and the one it is being moved to while a
-- move runs. Every database has the table so that every database has the
-- same schema.
--
-- `tenants.moved_to` fences a tenant that is being moved out, or was: every
-- write of the tenant in this database is refused from then on (an append's
-- counter bump, and `FOR KEY SHARE` on the tenant's row for the writes
-- that append nothing), so the copy a move makes holds everything ever
-- written here. Once the copy is committed in the other database,
-- `moved_at` is set: from then on the rows here are an old copy, left out
-- of every listing (tenants, heads, due products, plugin slots) and removed
-- after a grace period; the tenant's own reads still find them until its
-- placement moves on.
--
-- A tenant's message ids are its clients' read cursors and move with it:
-- they are unique per tenant (the sequence is moved past them on import).
CREATE TABLE placements (
    tenant     TEXT PRIMARY KEY,
    db         TEXT NOT NULL,
    moving_to  TEXT,
    changed_at BIGINT NOT NULL
);
CREATE INDEX placements_by_db ON placements (db);

ALTER TABLE tenants ADD COLUMN moved_to TEXT;
ALTER TABLE tenants ADD COLUMN moved_at BIGINT;

ALTER TABLE messages DROP CONSTRAINT messages_pkey;
ALTER TABLE messages ADD PRIMARY KEY (tenant, id);
