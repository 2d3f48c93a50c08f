-- Host principals: a supervisor's own token (kind 'host'), never an operator's.
ALTER TABLE tokens DROP CONSTRAINT tokens_kind_check;
ALTER TABLE tokens ADD CONSTRAINT tokens_kind_check CHECK (kind IN ('agent', 'operator', 'host'));
CREATE INDEX tokens_active_by_kind ON tokens (kind) WHERE revoked_at IS NULL;
