-- Knowledge chunks of agents' document folders, searched with PostgreSQL full-text (BM25-like
-- ranking by ts_rank). ``owner`` is ``agent:NAME`` (an agent's own folders) or
-- ``shared:NAME`` (a [knowledge.NAME] folder); ``seq`` is the chunk's place in its file.
CREATE TABLE knowledge_chunks (
    owner TEXT NOT NULL,
    path TEXT NOT NULL,
    seq INTEGER NOT NULL,
    page INTEGER,
    section TEXT NOT NULL,
    line INTEGER,
    text TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    tsv TSVECTOR GENERATED ALWAYS AS (
        setweight(to_tsvector('english', section), 'A') || setweight(to_tsvector('english', text), 'B')
    ) STORED,
    PRIMARY KEY (owner, path, seq)
);
CREATE INDEX knowledge_chunks_tsv ON knowledge_chunks USING GIN (tsv);
