-- Webhooks: a job may name one; its terminal state puts a delivery in the outbox.
ALTER TABLE jobs ADD COLUMN webhook_url TEXT;

CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id           TEXT NOT NULL UNIQUE,
    url              TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';

CREATE TABLE webhook_attempts (
    delivery_id INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status_code INTEGER,
    error       TEXT
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, at);

-- The outbox entry is written by the same statement that ends the job, whatever path ends it
-- (finish, cancel, deadline, recovery), so a crash can never lose a webhook.
CREATE TRIGGER jobs_terminal_webhook
AFTER UPDATE OF status ON jobs
WHEN NEW.status IN ('COMPLETED', 'FAILED', 'CANCELED')
     AND OLD.status NOT IN ('COMPLETED', 'FAILED', 'CANCELED')
     AND NEW.webhook_url IS NOT NULL
BEGIN
    INSERT INTO webhook_deliveries (job_id, url, created_at, next_attempt_at)
    VALUES (NEW.id, NEW.webhook_url, NEW.completed_at, NEW.completed_at)
    ON CONFLICT (job_id) DO NOTHING;
END;
