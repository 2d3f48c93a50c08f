-- Host principals: a supervisor's own token (kind 'host'), never an operator's. SQLite cannot
-- alter a CHECK constraint, so the table is rebuilt with its rows, ids and index.
CREATE TABLE tokens_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix      TEXT NOT NULL UNIQUE,
    digest      TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('agent', 'operator', 'host')),
    name        TEXT NOT NULL,
    label       TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);
INSERT INTO tokens_new (id, prefix, digest, kind, name, label, created_at, expires_at, revoked_at)
SELECT id, prefix, digest, kind, name, label, created_at, expires_at, revoked_at FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_new RENAME TO tokens;
CREATE INDEX tokens_by_name ON tokens (name);
CREATE INDEX tokens_active_by_kind ON tokens (kind) WHERE revoked_at IS NULL;
