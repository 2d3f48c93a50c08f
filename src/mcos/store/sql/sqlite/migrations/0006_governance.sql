-- Incidents at their gates, with every transition; approval requests and their votes
-- (times in integer microseconds since the epoch).
CREATE TABLE incidents (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    severity     TEXT NOT NULL CHECK (severity IN ('P3', 'P2', 'P1', 'P0')),
    reported_as  TEXT NOT NULL,
    state        TEXT NOT NULL
                 CHECK (state IN ('reported', 'confirmed', 'escalated', 'resolved', 'dismissed')),
    summary      TEXT NOT NULL,
    evidence     TEXT NOT NULL DEFAULT '',
    reporter     TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    reports      INTEGER NOT NULL DEFAULT 1,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX incidents_open ON incidents (fingerprint)
    WHERE state IN ('reported', 'confirmed', 'escalated');
CREATE INDEX incidents_by_reporter ON incidents (reporter, created_at);

CREATE TABLE incident_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id  INTEGER NOT NULL REFERENCES incidents (id),
    at           INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    severity     TEXT NOT NULL,
    reason       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX incident_events_by_incident ON incident_events (incident_id, id);
CREATE INDEX incident_events_reports ON incident_events (actor, at) WHERE action IN ('reported', 'grouped');

CREATE TABLE approvals (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    action        TEXT NOT NULL,
    payload       TEXT NOT NULL,
    payload_hash  TEXT NOT NULL,
    requester     TEXT NOT NULL,
    rationale     TEXT NOT NULL DEFAULT '',
    quorum        TEXT NOT NULL,
    state         TEXT NOT NULL
                  CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'vetoed')),
    executor      TEXT,
    constraints   TEXT NOT NULL DEFAULT '',
    report_every  TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    decided_at    INTEGER,
    decided_by    TEXT NOT NULL DEFAULT '',
    reason        TEXT NOT NULL DEFAULT '',
    directive_id  INTEGER,
    acknowledged_at INTEGER,
    reminded_at  INTEGER
);
CREATE UNIQUE INDEX approvals_one_pending ON approvals (action, payload_hash) WHERE state = 'pending';

CREATE TABLE approval_votes (
    approval_id  INTEGER NOT NULL REFERENCES approvals (id),
    voter        TEXT NOT NULL,
    vote         TEXT NOT NULL CHECK (vote IN ('approve', 'deny')),
    rationale    TEXT NOT NULL,
    at           INTEGER NOT NULL,
    PRIMARY KEY (approval_id, voter)
);
