-- Workspace sync: each agent's workspace files, content-addressed. ``workspace_blobs`` holds
-- each distinct content once per agent (by sha256); ``workspace_files`` is the agent's latest
-- manifest (path → hash); ``workspace_heads`` its version and the fence of the instance that
-- pushed it (times in integer microseconds since the epoch). Blobs no manifest names are
-- swept when a new version is committed.
CREATE TABLE workspace_blobs (
    agent       TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    content     BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (agent, sha256)
);

CREATE TABLE workspace_heads (
    agent       TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,
    fence       INTEGER,
    bytes       INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE workspace_files (
    agent   TEXT NOT NULL,
    path    TEXT NOT NULL,
    sha256  TEXT NOT NULL,
    size    INTEGER NOT NULL,
    PRIMARY KEY (agent, path)
);
CREATE INDEX workspace_files_by_blob ON workspace_files (agent, sha256);
