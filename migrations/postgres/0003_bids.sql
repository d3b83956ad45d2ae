-- Products under auction. `version` grows with every change of state.
CREATE TABLE products (
    id             TEXT PRIMARY KEY,
    tenant         TEXT NOT NULL,
    seller_id      TEXT NOT NULL,
    title          TEXT NOT NULL,
    starting_price BIGINT NOT NULL,
    min_increment  BIGINT NOT NULL,
    anti_snipe_ms  BIGINT NOT NULL DEFAULT 0,
    ends_at        BIGINT,
    status         TEXT NOT NULL DEFAULT 'open',
    current_bid    BIGINT,
    leader         TEXT,
    bid_count      BIGINT NOT NULL DEFAULT 0,
    version        BIGINT NOT NULL DEFAULT 1,
    created_at     BIGINT NOT NULL
);
CREATE INDEX products_open_by_end ON products (status, ends_at);

-- Bids; a row exists (queued) before the 202 is sent; n orders a product's bids.
CREATE TABLE bids (
    n               BIGSERIAL PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    tenant          TEXT NOT NULL,
    product_id      TEXT NOT NULL,
    bidder_id       TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    idempotency_key TEXT,
    status          TEXT NOT NULL DEFAULT 'queued',
    reason          TEXT,
    decided_by      TEXT,
    created_at      BIGINT NOT NULL,
    decided_at      BIGINT
);
CREATE INDEX bids_queued ON bids (product_id, status, n);
CREATE UNIQUE INDEX bids_idempotency ON bids (tenant, bidder_id, idempotency_key);
