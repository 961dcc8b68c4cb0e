-- Counting a key's queued jobs for its cap reads only this partial index.
CREATE INDEX jobs_queued_by_key ON jobs (key_id) WHERE status = 'QUEUED';
