-- Pages to humans (urgent items, P0 incidents, approval requests): one per person and subject,
-- with the channel that carried it and the acknowledgement.
CREATE TABLE pages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    human       text NOT NULL,
    key         text NOT NULL,
    kind        text NOT NULL,
    subject     text NOT NULL,
    body        text NOT NULL DEFAULT '',
    state       text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'sent', 'failed', 'acked')),
    channel     text NOT NULL DEFAULT '',
    ref         text NOT NULL DEFAULT '',
    attempts    integer NOT NULL DEFAULT 0,
    error       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL,
    sent_at     timestamptz,
    acked_at    timestamptz,
    acked_by    text NOT NULL DEFAULT '',
    UNIQUE (human, key)
);
CREATE INDEX pages_open ON pages (state, created_at);
