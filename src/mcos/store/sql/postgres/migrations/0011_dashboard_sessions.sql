-- Dashboard sessions kept server-side: the cookie carries only a signed random id; the row holds
-- the SHA-256 of that id, the operator token the session was opened with, and its end. A session
-- is live while it is not ended (logout), not expired, and its token is still usable.
CREATE TABLE dashboard_sessions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id_hash     text NOT NULL UNIQUE,
    token_id    bigint NOT NULL REFERENCES tokens (id),
    operator    text NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    ended_at    timestamptz
);
CREATE INDEX dashboard_sessions_by_token ON dashboard_sessions (token_id);
