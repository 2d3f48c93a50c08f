-- Directory, messages and deliveries. All times are timestamptz from clock_timestamp().
CREATE TABLE recipients (
    name          text PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('agent', 'topic', 'human')),
    role          text NOT NULL DEFAULT '',
    host          text NOT NULL DEFAULT '',
    reports_to    text,
    info          jsonb NOT NULL DEFAULT '{}',
    active        boolean NOT NULL DEFAULT true,
    last_seen_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE subscriptions (
    topic       text NOT NULL REFERENCES recipients (name),
    subscriber  text NOT NULL REFERENCES recipients (name),
    PRIMARY KEY (topic, subscriber)
);
CREATE INDEX subscriptions_by_subscriber ON subscriptions (subscriber);

CREATE TABLE messages (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sender           text NOT NULL,
    recipient        text NOT NULL,
    recipient_kind   text NOT NULL,
    kind             text NOT NULL,
    priority         smallint NOT NULL,
    subject          text NOT NULL,
    body             text NOT NULL,
    thread_id        bigint NOT NULL,
    reply_to         bigint REFERENCES messages (id),
    idempotency_key  text,
    content_hash     text NOT NULL,
    meta             jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX messages_idempotency ON messages (sender, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX messages_by_thread ON messages (thread_id, id);

-- Live deliveries only: acked ones move to delivery_history so this hot table stays small.
-- visible_at is when the row may next be claimed: for a queued row, after any retry delay;
-- for a claimed row, its claim deadline.
CREATE TABLE deliveries (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  bigint NOT NULL REFERENCES messages (id),
    inbox       text NOT NULL,
    priority    smallint NOT NULL,
    state       text NOT NULL CHECK (state IN ('queued', 'claimed', 'dead')),
    attempts    integer NOT NULL DEFAULT 0,
    visible_at  timestamptz NOT NULL,
    receipt     text,
    last_error  text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01,
        autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_limit = 2000);
CREATE INDEX deliveries_claimable ON deliveries (inbox, priority DESC, id)
    WHERE state IN ('queued', 'claimed');
CREATE INDEX deliveries_dead ON deliveries (inbox, id) WHERE state = 'dead';

CREATE TABLE delivery_history (
    id          bigint PRIMARY KEY,
    message_id  bigint NOT NULL,
    inbox       text NOT NULL,
    attempts    integer NOT NULL,
    receipt     text NOT NULL,
    created_at  timestamptz NOT NULL,
    acked_at    timestamptz NOT NULL
);
CREATE INDEX delivery_history_by_message ON delivery_history (message_id);
