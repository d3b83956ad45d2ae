-- Products under auction. `version` grows with every change of state.
CREATE TABLE products (
    id             TEXT PRIMARY KEY,
    tenant         TEXT NOT NULL,
    seller_id      TEXT NOT NULL,
    title          TEXT NOT NULL,
    starting_price INTEGER NOT NULL,
    min_increment  INTEGER NOT NULL,
    anti_snipe_ms  INTEGER NOT NULL DEFAULT 0,
    ends_at        INTEGER,
    status         TEXT NOT NULL DEFAULT 'open',
    current_bid    INTEGER,
    leader         TEXT,
    bid_count      INTEGER NOT NULL DEFAULT 0,
    version        INTEGER NOT NULL DEFAULT 1,
    created_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX products_open_by_end ON products (status, ends_at);

-- Bids; a row exists (queued) before the 202 is sent; n orders a product's bids.
CREATE TABLE bids (
    n               INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    tenant          TEXT NOT NULL,
    product_id      TEXT NOT NULL,
    bidder_id       TEXT NOT NULL,
    amount          INTEGER NOT NULL,
    idempotency_key TEXT,
    status          TEXT NOT NULL DEFAULT 'queued',
    reason          TEXT,
    decided_by      TEXT,
    created_at      INTEGER NOT NULL,
    decided_at      INTEGER
);
CREATE INDEX bids_queued ON bids (product_id, status, n);
CREATE UNIQUE INDEX bids_idempotency ON bids (tenant, bidder_id, idempotency_key);
