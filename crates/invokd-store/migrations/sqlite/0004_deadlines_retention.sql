-- A run limit chosen for the job (else the model's, else the server's), in milliseconds.
ALTER TABLE jobs ADD COLUMN run_timeout_ms INTEGER;
-- Set when retention removed the job's output and files.
ALTER TABLE jobs ADD COLUMN expired_at INTEGER;
CREATE INDEX jobs_to_expire ON jobs (completed_at)
    WHERE expired_at IS NULL AND status IN ('COMPLETED', 'FAILED', 'CANCELED');
