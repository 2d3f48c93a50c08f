-- Directory, messages and deliveries. Times are integer microseconds since the Unix epoch, UTC.
CREATE TABLE recipients (
    name          TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('agent', 'topic', 'human')),
    role          TEXT NOT NULL DEFAULT '',
    host          TEXT NOT NULL DEFAULT '',
    reports_to    TEXT,
    info          TEXT NOT NULL DEFAULT '{}',
    active        INTEGER NOT NULL DEFAULT 1,
    last_seen_at  INTEGER,
    created_at    INTEGER NOT NULL
);

CREATE TABLE subscriptions (
    topic       TEXT NOT NULL REFERENCES recipients (name),
    subscriber  TEXT NOT NULL REFERENCES recipients (name),
    PRIMARY KEY (topic, subscriber)
);
CREATE INDEX subscriptions_by_subscriber ON subscriptions (subscriber);

CREATE TABLE messages (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    sender           TEXT NOT NULL,
    recipient        TEXT NOT NULL,
    recipient_kind   TEXT NOT NULL,
    kind             TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    subject          TEXT NOT NULL,
    body             TEXT NOT NULL,
    thread_id        INTEGER NOT NULL,
    reply_to         INTEGER REFERENCES messages (id),
    idempotency_key  TEXT,
    content_hash     TEXT NOT NULL,
    meta             TEXT NOT NULL DEFAULT '{}',
    created_at       INTEGER NOT NULL
);
CREATE UNIQUE INDEX messages_idempotency ON messages (sender, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX messages_by_thread ON messages (thread_id, id);

-- Live deliveries only: acked ones move to delivery_history so this table stays small.
-- visible_at is when the row may next be claimed: for a queued row, after any retry delay;
-- for a claimed row, its claim deadline.
CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id  INTEGER NOT NULL REFERENCES messages (id),
    inbox       TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'claimed', 'dead')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    visible_at  INTEGER NOT NULL,
    receipt     TEXT,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX deliveries_claimable ON deliveries (inbox, priority DESC, id)
    WHERE state IN ('queued', 'claimed');
CREATE INDEX deliveries_dead ON deliveries (inbox, id) WHERE state = 'dead';

CREATE TABLE delivery_history (
    id          INTEGER PRIMARY KEY,
    message_id  INTEGER NOT NULL,
    inbox       TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    receipt     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    acked_at    INTEGER NOT NULL
);
CREATE INDEX delivery_history_by_message ON delivery_history (message_id);
