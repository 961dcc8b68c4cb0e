-- The PostgreSQL store: the same tables, rules and triggers as the SQLite one (migrations
-- 0001-0006 there), in one step. Timestamps are unix microseconds (bigint), as in SQLite, so
-- both stores give back exactly the instants they were given. Everything lives in the schema
-- first on the connection's search_path.

-- Wake-up channels carry the schema's name, because NOTIFY channels are per database: two
-- deployments (or two test schemas) in one database must not wake each other. A long schema
-- name is hashed, so a channel stays within PostgreSQL's 63-byte identifier limit.
CREATE FUNCTION invokd_channel(kind text, schema_name text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT 'invokd_' || kind || '_' ||
                 CASE WHEN octet_length(schema_name) <= 40 THEN schema_name ELSE md5(schema_name) END $$;

-- Keys are stored hashed.
CREATE TABLE keys (
    id         uuid PRIMARY KEY,
    hash       text NOT NULL UNIQUE,
    prefix     text NOT NULL,
    name       text NOT NULL,
    project    text NOT NULL,
    created_at bigint NOT NULL,
    revoked_at bigint
);

CREATE TABLE jobs (
    id                  uuid PRIMARY KEY,
    key_id              uuid NOT NULL,
    project             text NOT NULL,
    model_id            text NOT NULL,
    -- json, not jsonb: input and output are written once and read whole, tags only matched
    -- within one caller's listing; and jsonb would refuse a \u0000 that SQLite (and the API)
    -- accept.
    input               json NOT NULL,
    -- [[name, value], ...]
    tags                json NOT NULL,
    status              text NOT NULL
        CHECK (status IN ('QUEUED', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELED')),
    priority            integer NOT NULL,
    created_at          bigint NOT NULL,
    started_at          bigint,
    completed_at        bigint,
    attempt             integer NOT NULL DEFAULT 0,
    max_attempts        integer NOT NULL,
    lease_owner         text,
    lease_expires_at    bigint,
    output              json,
    error_message       text,
    error_type          text,
    -- A queued job not started by then never runs (fal's X-Fal-Request-Timeout).
    start_deadline      bigint,
    -- Set when a running job is asked to stop; the run ends CANCELED.
    cancel_requested_at bigint,
    webhook_url         text,
    -- A run limit chosen for the job, in milliseconds.
    run_timeout_ms      bigint,
    -- Set when retention removed the job's output and files.
    expired_at          bigint
);

-- The claim path: per model, in claim order; also the queue position and the list of models
-- with queued jobs (a loose index scan).
CREATE INDEX jobs_queued_by_model ON jobs (model_id, priority, created_at, id) WHERE status = 'QUEUED';
CREATE INDEX jobs_deadlines ON jobs (start_deadline) WHERE status = 'QUEUED' AND start_deadline IS NOT NULL;
-- Sweeping expired leases, and counting running jobs per model.
CREATE INDEX jobs_running ON jobs (lease_expires_at) WHERE status = 'IN_PROGRESS';
CREATE INDEX jobs_running_by_model ON jobs (model_id) WHERE status = 'IN_PROGRESS';
-- A key's queued jobs, for its cap.
CREATE INDEX jobs_queued_by_key ON jobs (key_id) WHERE status = 'QUEUED';
-- Listing newest first with cursor paging on (created_at, id), per project or for everyone.
CREATE INDEX jobs_by_project ON jobs (project, created_at DESC, id DESC);
CREATE INDEX jobs_by_created ON jobs (created_at DESC, id DESC);
-- Retention.
CREATE INDEX jobs_to_expire ON jobs (completed_at)
    WHERE expired_at IS NULL AND status IN ('COMPLETED', 'FAILED', 'CANCELED');

-- Terminal states are final, whatever code runs against this database.
CREATE FUNCTION jobs_terminal_is_final() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
    AS $$ BEGIN RAISE EXCEPTION 'terminal job status is final'; END $$;
CREATE TRIGGER jobs_terminal_is_final
    BEFORE UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (OLD.status IN ('COMPLETED', 'FAILED', 'CANCELED') AND NEW.status <> OLD.status)
    EXECUTE FUNCTION jobs_terminal_is_final();

CREATE TABLE job_logs (
    seq     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id  uuid NOT NULL,
    ts      bigint NOT NULL,
    level   text NOT NULL,
    message text NOT NULL
);
CREATE INDEX job_logs_by_job ON job_logs (job_id, seq);

-- Idempotency-Key records: the same key and body give back the first job.
CREATE TABLE idempotency_keys (
    key_id     uuid NOT NULL,
    idem_key   text NOT NULL,
    body_hash  text NOT NULL,
    job_id     uuid NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (key_id, idem_key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- Webhooks: a job's terminal state puts a delivery in the outbox.
CREATE TABLE webhook_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id           uuid NOT NULL UNIQUE,
    url              text NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    created_at       bigint NOT NULL,
    next_attempt_at  bigint NOT NULL,
    lease_owner      text,
    lease_expires_at bigint
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';

CREATE TABLE webhook_attempts (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES webhook_deliveries (id),
    at          bigint NOT NULL,
    status_code integer,
    error       text
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, at, seq);

-- The outbox entry is written by the same statement that ends the job, whatever path ends it
-- (finish, cancel, deadline, recovery), so a crash can never lose a webhook.
CREATE FUNCTION jobs_terminal_webhook() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
    AS $$
BEGIN
    INSERT INTO webhook_deliveries (job_id, url, created_at, next_attempt_at)
    VALUES (NEW.id, NEW.webhook_url, NEW.completed_at, NEW.completed_at)
    ON CONFLICT (job_id) DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_terminal_webhook
    AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (NEW.status IN ('COMPLETED', 'FAILED', 'CANCELED')
          AND OLD.status NOT IN ('COMPLETED', 'FAILED', 'CANCELED')
          AND NEW.webhook_url IS NOT NULL)
    EXECUTE FUNCTION jobs_terminal_webhook();

-- Wake-ups, sent on commit: a job entering the queue (new or back) wakes dispatchers on every
-- replica; a job changing state, being asked to cancel, or getting log lines wakes live readers.
-- Triggers, so that every path that moves a job is heard, as with the outbox. Heartbeats send
-- nothing. (PostgreSQL serialises the commits of notifying transactions on a queue lock: cheap
-- at job rates, and the first thing to measure if commits ever queue up there.)
CREATE FUNCTION jobs_notify() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
    AS $$
BEGIN
    IF NEW.status = 'QUEUED' AND (TG_OP = 'INSERT' OR OLD.status <> 'QUEUED') THEN
        PERFORM pg_notify(invokd_channel('queue', TG_TABLE_SCHEMA), NEW.model_id);
    END IF;
    IF TG_OP = 'INSERT' OR NEW.status <> OLD.status
       OR NEW.cancel_requested_at IS DISTINCT FROM OLD.cancel_requested_at THEN
        PERFORM pg_notify(invokd_channel('jobs', TG_TABLE_SCHEMA), NEW.id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_notify
    AFTER INSERT OR UPDATE OF status, cancel_requested_at ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_notify();

CREATE FUNCTION job_logs_notify() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
    AS $$
BEGIN
    PERFORM pg_notify(invokd_channel('jobs', TG_TABLE_SCHEMA), NEW.job_id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER job_logs_notify
    AFTER INSERT ON job_logs
    FOR EACH ROW EXECUTE FUNCTION job_logs_notify();
