-- Where a job runs upstream (fal's request id and URLs), so a later attempt resumes it rather
-- than submitting again. A reference without a request id marks a submission under way.
ALTER TABLE jobs ADD COLUMN upstream json;
