-- Knowledge chunks live in Mission Control's store only on PostgreSQL fleets; on SQLite fleets
-- each agent keeps its own FTS5 index (docs/runtime.md). Nothing to create: this step keeps
-- both dialects at the same schema version.
SELECT 1;
