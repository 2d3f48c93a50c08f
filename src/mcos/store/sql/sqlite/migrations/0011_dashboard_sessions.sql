-- Dashboard sessions kept server-side: the cookie carries only a signed random id; the row holds
-- the SHA-256 of that id, the operator token the session was opened with, and its end. A session
-- is live while it is not ended (logout), not expired, and its token is still usable.
-- Times in integer microseconds.
CREATE TABLE dashboard_sessions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    id_hash     TEXT NOT NULL UNIQUE,
    token_id    INTEGER NOT NULL REFERENCES tokens (id),
    operator    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    ended_at    INTEGER
);
CREATE INDEX dashboard_sessions_by_token ON dashboard_sessions (token_id);
