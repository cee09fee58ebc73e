-- The gateway's event path: an idempotency key remembers the job and what
-- the request did to it (the answer is rendered again from the job);
-- indexes that fit every filter the list offers, newest first; published
-- outbox rows are purged by age.

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

CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
