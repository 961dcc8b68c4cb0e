-- Listing a caller's jobs newest first, with stable cursor paging on (created_at, id).
CREATE INDEX jobs_by_key ON jobs (key_id, created_at DESC, id DESC);

-- Idempotency-Key records: the same key and body give back the first job.
CREATE TABLE idempotency_keys (
    key_id     TEXT NOT NULL,
    idem_key   TEXT NOT NULL,
    body_hash  TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, idem_key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
