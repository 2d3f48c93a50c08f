-- Pages to humans (urgent items, P0 incidents, approval requests): one per person and subject,
-- with the channel that carried it and the acknowledgement (times in integer microseconds).
CREATE TABLE pages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    human       TEXT NOT NULL,
    key         TEXT NOT NULL,
    kind        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    body        TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'sent', 'failed', 'acked')),
    channel     TEXT NOT NULL DEFAULT '',
    ref         TEXT NOT NULL DEFAULT '',
    attempts    INTEGER NOT NULL DEFAULT 0,
    error       TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    sent_at     INTEGER,
    acked_at    INTEGER,
    acked_by    TEXT NOT NULL DEFAULT '',
    UNIQUE (human, key)
);
CREATE INDEX pages_open ON pages (state, created_at);
