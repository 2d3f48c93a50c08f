-- The audit chain is keyed (HMAC-SHA256 under a key derived from the server's token key, which
-- is not in the database) from the next record on; the records already written keep their plain
-- SHA-256 and are verified as such. `keyed_from` is the first keyed sequence (1 on a new store).
ALTER TABLE audit_head ADD COLUMN keyed_from INTEGER NOT NULL DEFAULT 1;
UPDATE audit_head SET keyed_from = seq + 1;
