-- Reservations remember what Mission Control priced: the model, the prompt's token bound and the
-- output it granted (clamped to what the caps had left), so that a report of more than that is
-- flagged. Rows from before keep 0 / '' (nothing to compare against).
ALTER TABLE budget_reservations
    ADD COLUMN model text NOT NULL DEFAULT '',
    ADD COLUMN prompt_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN max_output bigint NOT NULL DEFAULT 0;
