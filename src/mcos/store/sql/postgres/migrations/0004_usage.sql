-- Model calls with their tokens and cost, budget reservations held before calls, and the state
-- each agent runtime last reported. Money in integer micro-dollars; days are UTC dates.
CREATE TABLE budget_reservations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent       text NOT NULL,
    day         date NOT NULL,
    usd_micros  bigint NOT NULL,
    tokens      bigint NOT NULL,
    purpose     text NOT NULL DEFAULT '',
    state       text NOT NULL CHECK (state IN ('held', 'settled')),
    created_at  timestamptz NOT NULL,
    settled_at  timestamptz
);
CREATE INDEX budget_reservations_held ON budget_reservations (day, agent) WHERE state = 'held';

CREATE TABLE model_calls (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent               text NOT NULL,
    at                  timestamptz NOT NULL,
    day                 date NOT NULL,
    provider            text NOT NULL,
    model               text NOT NULL,
    purpose             text NOT NULL DEFAULT '',
    input_tokens        bigint NOT NULL,
    output_tokens       bigint NOT NULL,
    cache_read_tokens   bigint NOT NULL,
    cache_write_tokens  bigint NOT NULL,
    cost_micros         bigint NOT NULL,
    reservation_id      bigint
);
CREATE INDEX model_calls_by_day ON model_calls (day, agent);

CREATE TABLE agent_states (
    name        text PRIMARY KEY,
    state       text NOT NULL,
    detail      text NOT NULL DEFAULT '',
    until       timestamptz,
    info        jsonb NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL
);
