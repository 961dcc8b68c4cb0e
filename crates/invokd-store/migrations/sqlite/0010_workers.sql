-- Workers: the tokens they authenticate with (stored hashed, like keys) and their presence.
CREATE TABLE worker_tokens (
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    name       TEXT NOT NULL,
    -- A JSON array of model ids and `prefix*` patterns.
    models     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

-- One row per worker process (its id is its own), written at each take and heartbeat.
CREATE TABLE workers (
    id         TEXT PRIMARY KEY,
    token_id   TEXT NOT NULL,
    -- The lease owner its jobs are claimed under.
    owner      TEXT NOT NULL,
    name       TEXT NOT NULL,
    version    TEXT,
    models     TEXT NOT NULL,
    slots      INTEGER NOT NULL,
    labels     TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    completed  INTEGER NOT NULL DEFAULT 0,
    failed     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX workers_by_last_seen ON workers (last_seen);
