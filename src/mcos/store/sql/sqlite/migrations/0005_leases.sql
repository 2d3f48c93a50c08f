-- One lease per agent: who may run it, the fencing token of the current grant, until when
-- (times in integer microseconds since the epoch).
CREATE TABLE leases (
    agent        TEXT PRIMARY KEY,
    holder       TEXT NOT NULL,
    host         TEXT NOT NULL DEFAULT '',
    fence        INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    acquired_at  INTEGER NOT NULL,
    renewed_at   INTEGER NOT NULL
);
