-- Model calls with their tokens and cost, budget reservations held before calls, and the state
-- each agent runtime last reported. Money in integer micro-dollars; days are UTC dates.
CREATE TABLE budget_reservations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    agent       TEXT NOT NULL,
    day         TEXT NOT NULL,
    usd_micros  INTEGER NOT NULL,
    tokens      INTEGER NOT NULL,
    purpose     TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL CHECK (state IN ('held', 'settled')),
    created_at  INTEGER NOT NULL,
    settled_at  INTEGER
);
CREATE INDEX budget_reservations_held ON budget_reservations (day, agent) WHERE state = 'held';

CREATE TABLE model_calls (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    agent               TEXT NOT NULL,
    at                  INTEGER NOT NULL,
    day                 TEXT NOT NULL,
    provider            TEXT NOT NULL,
    model               TEXT NOT NULL,
    purpose             TEXT NOT NULL DEFAULT '',
    input_tokens        INTEGER NOT NULL,
    output_tokens       INTEGER NOT NULL,
    cache_read_tokens   INTEGER NOT NULL,
    cache_write_tokens  INTEGER NOT NULL,
    cost_micros         INTEGER NOT NULL,
    reservation_id      INTEGER
);
CREATE INDEX model_calls_by_day ON model_calls (day, agent);

CREATE TABLE agent_states (
    name        TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    until       INTEGER,
    info        TEXT NOT NULL DEFAULT '{}',
    updated_at  INTEGER NOT NULL
);
