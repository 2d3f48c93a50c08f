-- Workspace sync: each agent's workspace files, content-addressed. ``workspace_blobs`` holds
-- each distinct content once per agent (by sha256); ``workspace_files`` is the agent's latest
-- manifest (path → hash); ``workspace_heads`` its version and the fence of the instance that
-- pushed it. A manifest names only blobs the agent holds (the foreign key), and blobs no
-- manifest names are swept when a new version is committed.
CREATE TABLE workspace_blobs (
    agent       TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    content     BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (agent, sha256)
);

CREATE TABLE workspace_heads (
    agent       TEXT PRIMARY KEY,
    version     BIGINT NOT NULL,
    fence       BIGINT,
    bytes       BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE workspace_files (
    agent   TEXT NOT NULL,
    path    TEXT NOT NULL,
    sha256  TEXT NOT NULL,
    size    BIGINT NOT NULL,
    PRIMARY KEY (agent, path),
    FOREIGN KEY (agent, sha256) REFERENCES workspace_blobs (agent, sha256)
);
CREATE INDEX workspace_files_by_blob ON workspace_files (agent, sha256);
