-- Reservations remember what Mission Control priced: the model, the prompt's token bound and the
-- output it granted (clamped to what the caps had left), so that a report of more than that is
-- flagged. Rows from before keep 0 / '' (nothing to compare against).
ALTER TABLE budget_reservations ADD COLUMN model TEXT NOT NULL DEFAULT '';
ALTER TABLE budget_reservations ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE budget_reservations ADD COLUMN max_output INTEGER NOT NULL DEFAULT 0;
