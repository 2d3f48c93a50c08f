-- Delivery that tells "could not try" from "tried and failed".
-- deferrals: claims handed back because the recipient could not act (no attempt used).
-- expires_at: the sender's optional deadline; past it the delivery is dead-lettered "expired".
-- notified_at: when Mission Control told the recipient's manager and the humans of this dead
-- letter (NULL on a dead letter: not yet told).
ALTER TABLE deliveries ADD COLUMN deferrals integer NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN expires_at timestamptz;
ALTER TABLE deliveries ADD COLUMN notified_at timestamptz;
CREATE INDEX deliveries_expiring ON deliveries (expires_at)
    WHERE expires_at IS NOT NULL AND state IN ('queued', 'claimed');
CREATE INDEX deliveries_dead_unnotified ON deliveries (id)
    WHERE state = 'dead' AND notified_at IS NULL;
