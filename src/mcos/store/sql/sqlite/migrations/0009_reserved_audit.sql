-- Placeholder on the principals branch only: 0009 belongs to the audit scope. Drop this file when
-- the audit scope's 0009 is merged.
SELECT 1;
