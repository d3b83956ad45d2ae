-- Tenants; last_seq is the per-tenant event counter. It is bumped with a row
-- lock inside every append transaction, so ids are gapless, in commit order,
-- and mean the same on every node.
CREATE TABLE tenants (
    slug       TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    last_seq   BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

-- The event log. payload is the event's JSON text, rendered once at append.
CREATE TABLE events (
    tenant  TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    topic   TEXT NOT NULL,
    type    TEXT NOT NULL,
    payload TEXT NOT NULL,
    ts      BIGINT NOT NULL,
    PRIMARY KEY (tenant, seq)
);
CREATE INDEX events_by_topic ON events (tenant, topic, seq);
CREATE INDEX events_by_ts ON events (ts);

-- Per-topic state: how far retention has trimmed (for `reset`), and the
-- retained data a new subscriber gets as its `snapshot`.
CREATE TABLE topics (
    tenant       TEXT NOT NULL,
    topic        TEXT NOT NULL,
    trimmed_seq  BIGINT NOT NULL DEFAULT 0,
    retained     TEXT,
    retained_seq BIGINT,
    retained_ts  BIGINT,
    PRIMARY KEY (tenant, topic)
);
