-- Tenancy: keys belong to projects, and a job to its key's project. Keys made before projects
-- each get a project of their own, so what each key sees does not change.
ALTER TABLE keys ADD COLUMN project TEXT;
UPDATE keys SET project = id WHERE project IS NULL;
ALTER TABLE jobs ADD COLUMN project TEXT;
UPDATE jobs SET project = key_id WHERE project IS NULL;
CREATE INDEX jobs_by_project ON jobs (project, created_at DESC, id DESC);
