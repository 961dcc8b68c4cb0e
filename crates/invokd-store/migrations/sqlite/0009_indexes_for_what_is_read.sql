-- Indexes for what is read. Every index on jobs is written by each create, claim and requeue.
-- The queue in claim order across models is no longer read: claims take each model's first jobs
-- from jobs_queued_by_model, and counts of queued jobs read the narrower indexes by model and by
-- key. Listings are by project (jobs_by_project), no longer by key; listing every project's
-- jobs walks jobs_by_created.
DROP INDEX IF EXISTS jobs_queued;
DROP INDEX IF EXISTS jobs_by_key;
CREATE INDEX jobs_by_created ON jobs (created_at DESC, id DESC);
