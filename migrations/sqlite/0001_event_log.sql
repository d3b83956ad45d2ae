-- Tenants; last_seq is the per-tenant event counter, bumped inside every
-- append transaction, so ids are gapless and in commit order.
CREATE TABLE tenants (
    slug       TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    last_seq   INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- The event log. payload is the event's JSON text, rendered once at append.
CREATE TABLE events (
    tenant  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    topic   TEXT NOT NULL,
    type    TEXT NOT NULL,
    payload TEXT NOT NULL,
    ts      INTEGER NOT NULL,
    PRIMARY KEY (tenant, seq)
) WITHOUT ROWID;
CREATE INDEX events_by_topic ON events (tenant, topic, seq);
CREATE INDEX events_by_ts ON events (ts);

-- Per-topic state: how far retention has trimmed (for `reset`), and the
-- retained data a new subscriber gets as its `snapshot`.
CREATE TABLE topics (
    tenant       TEXT NOT NULL,
    topic        TEXT NOT NULL,
    trimmed_seq  INTEGER NOT NULL DEFAULT 0,
    retained     TEXT,
    retained_seq INTEGER,
    retained_ts  INTEGER,
    PRIMARY KEY (tenant, topic)
) WITHOUT ROWID;
