-- Turn traces: what each model turn of an agent saw, called and cost, posted by the agent at the
-- end of the turn. The trace itself is a JSON document; the columns are what it is found by.
-- turn_trace_messages links a trace to the messages that woke it and those it sent.
CREATE TABLE turn_traces (
    id            TEXT PRIMARY KEY,
    agent         TEXT NOT NULL,
    kind          TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    started_at    INTEGER NOT NULL,
    received_at   INTEGER NOT NULL,
    cost_micros   INTEGER NOT NULL,
    cost_source   TEXT NOT NULL,
    body          TEXT NOT NULL
);
CREATE INDEX turn_traces_by_agent ON turn_traces (agent, started_at);
CREATE INDEX turn_traces_by_start ON turn_traces (started_at);

CREATE TABLE turn_trace_messages (
    trace_id    TEXT NOT NULL REFERENCES turn_traces (id) ON DELETE CASCADE,
    message_id  INTEGER NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('woke', 'sent')),
    PRIMARY KEY (trace_id, role, message_id)
);
CREATE INDEX turn_trace_messages_by_message ON turn_trace_messages (message_id);
