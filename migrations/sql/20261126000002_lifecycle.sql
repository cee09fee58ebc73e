-- The failover lifecycle: cleanup jobs linked to their test failover,
-- compensation and cancel state, per-VM holds, auto-cleanup timers and
-- idempotency keys.

ALTER TABLE failover_jobs
    ADD COLUMN rollback_on_failure boolean NOT NULL DEFAULT true,
    ADD COLUMN cancel_requested    boolean NOT NULL DEFAULT false,
    -- The job counts against its VM: unfinished, a test failover that is up,
    -- or a job that left state behind.
    ADD COLUMN holds_vm            boolean NOT NULL DEFAULT true,
    -- A cleanup job's test failover, and a test failover's cleanup job.
    ADD COLUMN parent_job_id       text REFERENCES failover_jobs (job_id),
    ADD COLUMN cleanup_job_id      text,
    ADD COLUMN auto_cleanup_at     timestamptz,
    -- The job a waiting job waits behind.
    ADD COLUMN waiting_for         text;

CREATE INDEX failover_jobs_holding ON failover_jobs (vm_id, created_at) WHERE holds_vm;
CREATE INDEX failover_jobs_auto_cleanup ON failover_jobs (auto_cleanup_at)
    WHERE auto_cleanup_at IS NOT NULL AND cleanup_job_id IS NULL;

CREATE TABLE idempotency_keys (
    idempotency_key text NOT NULL,
    endpoint        text NOT NULL,
    request_hash    text NOT NULL,
    job_id          text NOT NULL,
    response_status integer NOT NULL,
    response_body   jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (idempotency_key, endpoint)
);
