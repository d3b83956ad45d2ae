-- Direct messages; a message and the events announcing it commit together.
CREATE TABLE messages (
    id         BIGSERIAL PRIMARY KEY,
    tenant     TEXT NOT NULL,
    sender     TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    product_id TEXT,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX messages_by_recipient ON messages (tenant, recipient, id);
CREATE INDEX messages_by_sender ON messages (tenant, sender, id);

-- How far each user has read; unread = messages to them above up_to.
CREATE TABLE message_reads (
    tenant  TEXT NOT NULL,
    user_id TEXT NOT NULL,
    up_to   BIGINT NOT NULL,
    PRIMARY KEY (tenant, user_id)
);

-- Secrets generated once and shared by every node (cluster mode).
CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
