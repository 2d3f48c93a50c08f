-- Turn traces: what each model turn of an agent saw, called and cost, posted by the agent at the
-- end of the turn. The trace itself is a JSON document; the columns are what it is found by.
-- turn_trace_messages links a trace to the messages that woke it and those it sent.
CREATE TABLE turn_traces (
    id            text PRIMARY KEY,
    agent         text NOT NULL,
    kind          text NOT NULL,
    outcome       text NOT NULL,
    started_at    timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    cost_micros   bigint NOT NULL,
    cost_source   text NOT NULL,
    body          jsonb NOT NULL
);
CREATE INDEX turn_traces_by_agent ON turn_traces (agent, started_at);
CREATE INDEX turn_traces_by_start ON turn_traces (started_at);

CREATE TABLE turn_trace_messages (
    trace_id    text NOT NULL REFERENCES turn_traces (id) ON DELETE CASCADE,
    message_id  bigint NOT NULL,
    role        text NOT NULL CHECK (role IN ('woke', 'sent')),
    PRIMARY KEY (trace_id, role, message_id)
);
CREATE INDEX turn_trace_messages_by_message ON turn_trace_messages (message_id);
