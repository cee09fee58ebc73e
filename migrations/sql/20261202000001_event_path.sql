-- The gateway's event path: an idempotency key remembers the job and what
-- the request did to it (the answer is rendered again from the job);
-- indexes that fit every filter the list offers, newest first; room on
-- every page of the rows that change at each step, so that an update that
-- moves no indexed column stays on its page (a HOT update, no index writes).

ALTER TABLE idempotency_keys
    ALTER COLUMN response_body DROP NOT NULL,
    ADD COLUMN outcome        text,
    ADD COLUMN correlation_id uuid;

DROP INDEX failover_jobs_status;
DROP INDEX failover_jobs_created_at;
DROP INDEX failover_jobs_vm_id;
CREATE INDEX failover_jobs_newest ON failover_jobs (created_at DESC, job_id DESC);
CREATE INDEX failover_jobs_status ON failover_jobs (status, created_at DESC, job_id DESC);
CREATE INDEX failover_jobs_type ON failover_jobs (job_type, created_at DESC, job_id DESC);
CREATE INDEX failover_jobs_status_type ON failover_jobs (status, job_type, created_at DESC, job_id DESC);
CREATE INDEX failover_jobs_vm_id ON failover_jobs (vm_id, created_at DESC, job_id DESC);

-- The relay takes the oldest unpublished rows first.
DROP INDEX outbox_unpublished;
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
-- A queue table: vacuumed often, so its scans skip few dead rows.
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000);

ALTER TABLE failover_jobs SET (fillfactor = 70);
ALTER TABLE failover_job_steps SET (fillfactor = 70);
