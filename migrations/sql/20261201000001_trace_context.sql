-- The W3C trace context of each job and of each dispatch, so that every
-- step of a job, its retries and its re-dispatches after a lease expiry
-- stay in the job's one trace. NULL when traces are not exported.

ALTER TABLE failover_jobs ADD COLUMN traceparent text;
ALTER TABLE outbox ADD COLUMN traceparent text;
