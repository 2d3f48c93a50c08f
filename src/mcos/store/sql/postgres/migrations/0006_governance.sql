-- Incidents at their gates, with every transition; approval requests and their votes.
CREATE TABLE incidents (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    severity     text NOT NULL CHECK (severity IN ('P3', 'P2', 'P1', 'P0')),
    reported_as  text NOT NULL,
    state        text NOT NULL
                 CHECK (state IN ('reported', 'confirmed', 'escalated', 'resolved', 'dismissed')),
    summary      text NOT NULL,
    evidence     text NOT NULL DEFAULT '',
    reporter     text NOT NULL,
    fingerprint  text NOT NULL,
    reports      integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX incidents_open ON incidents (fingerprint)
    WHERE state IN ('reported', 'confirmed', 'escalated');
CREATE INDEX incidents_by_reporter ON incidents (reporter, created_at);

CREATE TABLE incident_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES incidents (id),
    at           timestamptz NOT NULL,
    actor        text NOT NULL,
    action       text NOT NULL,
    severity     text NOT NULL,
    reason       text NOT NULL DEFAULT ''
);
CREATE INDEX incident_events_by_incident ON incident_events (incident_id, id);
CREATE INDEX incident_events_reports ON incident_events (actor, at) WHERE action IN ('reported', 'grouped');

CREATE TABLE approvals (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action        text NOT NULL,
    payload       jsonb NOT NULL,
    payload_hash  text NOT NULL,
    requester     text NOT NULL,
    rationale     text NOT NULL DEFAULT '',
    quorum        text NOT NULL,
    state         text NOT NULL
                  CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'vetoed')),
    executor      text,
    constraints   text NOT NULL DEFAULT '',
    report_every  text,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    decided_at    timestamptz,
    decided_by    text NOT NULL DEFAULT '',
    reason        text NOT NULL DEFAULT '',
    directive_id  bigint,
    acknowledged_at timestamptz,
    reminded_at  timestamptz
);
CREATE UNIQUE INDEX approvals_one_pending ON approvals (action, payload_hash) WHERE state = 'pending';

CREATE TABLE approval_votes (
    approval_id  bigint NOT NULL REFERENCES approvals (id),
    voter        text NOT NULL,
    vote         text NOT NULL CHECK (vote IN ('approve', 'deny')),
    rationale    text NOT NULL,
    at           timestamptz NOT NULL,
    PRIMARY KEY (approval_id, voter)
);
