-- Placeholder so this branch's 0011 applies in order: the lead drops it at merge (another
-- helper of issue 15 owns migration 0010).
SELECT 1;
