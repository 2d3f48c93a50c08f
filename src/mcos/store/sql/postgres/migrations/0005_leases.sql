-- One lease per agent: who may run it, the fencing token of the current grant, until when.
CREATE TABLE leases (
    agent        text PRIMARY KEY,
    holder       text NOT NULL,
    host         text NOT NULL DEFAULT '',
    fence        bigint NOT NULL,
    expires_at   timestamptz NOT NULL,
    acquired_at  timestamptz NOT NULL,
    renewed_at   timestamptz NOT NULL
);
