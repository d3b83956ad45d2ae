-- Plugin components by content hash (shared by every slot that uses them).
CREATE TABLE plugin_versions (
    hash       TEXT PRIMARY KEY,
    wasm       BLOB NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per slot and tenant ('' = every tenant): what is active, what runs
-- in shadow, earlier versions for rollback (newest first, JSON), the plugin's
-- configuration (JSON object), and `rev`, bumped on every change so other
-- nodes notice it.
CREATE TABLE plugin_slots (
    tenant     TEXT NOT NULL,
    slot       TEXT NOT NULL,
    active     TEXT,
    origin     TEXT,
    active_at  INTEGER,
    shadow     TEXT,
    history    TEXT NOT NULL DEFAULT '[]',
    config     TEXT NOT NULL DEFAULT '{}',
    rev        INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, slot)
) WITHOUT ROWID;

-- What the bid-validator saw for a decision ({"product", "now"}), so a
-- candidate can be replayed against real traffic.
ALTER TABLE bids ADD COLUMN decision_input TEXT;
