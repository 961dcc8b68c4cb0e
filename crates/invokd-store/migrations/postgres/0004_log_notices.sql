-- News of log lines carries its own payload ('logs:' and the job's id), so a listener can
-- tell it from a change of the job's state: log lines move no job in any queue, and only the
-- job's own readers need to wake. A replica of an earlier version ignores a payload it cannot
-- read (notices are hints; it polls).
CREATE OR REPLACE FUNCTION job_logs_notify() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
    AS $$
BEGIN
    PERFORM pg_notify(invokd_channel('jobs', TG_TABLE_SCHEMA), 'logs:' || NEW.job_id::text);
    RETURN NULL;
END $$;
