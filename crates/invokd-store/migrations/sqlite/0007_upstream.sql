-- A job's request at an upstream provider (fal), as JSON: {provider, request_id?, status_url?,
-- response_url?, cancel_url?}. Stored before the submission (without request_id, a marker) and
-- after it, so a restart resumes the upstream request instead of submitting it again.
ALTER TABLE jobs ADD COLUMN upstream TEXT;
