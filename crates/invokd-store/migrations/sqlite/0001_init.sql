-- Keys are stored hashed; timestamps are unix microseconds.
CREATE TABLE keys (
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    key_id           TEXT NOT NULL,
    model_id         TEXT NOT NULL,
    input            TEXT NOT NULL,
    tags             TEXT NOT NULL,
    status           TEXT NOT NULL
        CHECK (status IN ('QUEUED', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELED')),
    priority         INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    completed_at     INTEGER,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    output           TEXT,
    error_message    TEXT,
    error_type       TEXT,
    -- A queued job not started by then never runs (fal's X-Fal-Request-Timeout).
    start_deadline   INTEGER,
    -- Set when a running job is asked to stop; the run ends CANCELED.
    cancel_requested_at INTEGER
);

-- The queue in claim order, and running jobs by lease expiry.
CREATE INDEX jobs_queued ON jobs (priority, created_at, id) WHERE status = 'QUEUED';
CREATE INDEX jobs_queued_by_model ON jobs (model_id, priority, created_at, id) WHERE status = 'QUEUED';
CREATE INDEX jobs_deadlines ON jobs (start_deadline) WHERE status = 'QUEUED' AND start_deadline IS NOT NULL;
CREATE INDEX jobs_running ON jobs (lease_expires_at) WHERE status = 'IN_PROGRESS';

-- Terminal states are final, whatever code runs against this database.
CREATE TRIGGER jobs_terminal_is_final
BEFORE UPDATE OF status ON jobs
WHEN OLD.status IN ('COMPLETED', 'FAILED', 'CANCELED') AND NEW.status <> OLD.status
BEGIN
    SELECT RAISE(ABORT, 'terminal job status is final');
END;

CREATE TABLE job_logs (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT NOT NULL,
    ts      INTEGER NOT NULL,
    level   TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX job_logs_by_job ON job_logs (job_id, seq);
