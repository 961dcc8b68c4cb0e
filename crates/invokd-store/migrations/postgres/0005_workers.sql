-- Workers: the tokens they authenticate with (stored hashed, like keys) and their presence.
CREATE TABLE worker_tokens (
    id         uuid PRIMARY KEY,
    hash       text NOT NULL UNIQUE,
    prefix     text NOT NULL,
    name       text NOT NULL,
    -- A JSON array of model ids and `prefix*` patterns.
    models     text NOT NULL,
    created_at bigint NOT NULL,
    revoked_at bigint
);

-- One row per worker process (its id is its own), written at each take and heartbeat.
CREATE TABLE workers (
    id         text PRIMARY KEY,
    token_id   uuid NOT NULL,
    -- The lease owner its jobs are claimed under.
    owner      text NOT NULL,
    name       text NOT NULL,
    version    text,
    models     text NOT NULL,
    slots      integer NOT NULL,
    labels     text NOT NULL,
    first_seen bigint NOT NULL,
    last_seen  bigint NOT NULL,
    completed  bigint NOT NULL DEFAULT 0,
    failed     bigint NOT NULL DEFAULT 0
);
CREATE INDEX workers_by_last_seen ON workers (last_seen);
