-- The replicated-VM inventory, failover jobs with their steps, the audit
-- trail and the transactional outbox.

CREATE TABLE vms (
    vm_id             uuid PRIMARY KEY,
    vm_name           text NOT NULL,
    os_family         text NOT NULL CHECK (os_family IN ('windows', 'linux')),
    cpu_count         integer NOT NULL CHECK (cpu_count > 0),
    memory_mb         bigint NOT NULL CHECK (memory_mb > 0),
    replication_state text NOT NULL,
    -- [{disk_id, cloudstack_volume_id, linstor_resource, device_path, boot}]
    disks             jsonb NOT NULL,
    -- [{source_network, test_network_id, live_network_id}]
    nics              jsonb NOT NULL,
    registered_at     timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE failover_jobs (
    job_id                text PRIMARY KEY,
    correlation_id        uuid NOT NULL,
    vm_id                 uuid NOT NULL,
    vm_name               text NOT NULL,
    job_type              text NOT NULL,
    status                text NOT NULL,
    current_step          text,
    -- The VM as it was when the job was accepted, JSON-encoded text as the
    -- API reference shows it.
    source_vm_spec        text NOT NULL,
    -- Source network -> CloudStack network id, JSON-encoded text.
    network_mappings      text NOT NULL,
    -- The whole step context sent to workers (VM, disks, NICs).
    task_context          jsonb NOT NULL,
    skip_validation       boolean NOT NULL DEFAULT false,
    skip_snapshot         boolean NOT NULL DEFAULT false,
    skip_virtio_injection boolean NOT NULL DEFAULT false,
    auto_cleanup          boolean NOT NULL DEFAULT false,
    test_duration         text,
    custom_config         jsonb,
    notification_config   jsonb,
    linstor_snapshot_name text,
    destination_vm_id     text,
    -- Outputs of completed steps, passed on to later steps.
    outputs               jsonb NOT NULL DEFAULT '{}'::jsonb,
    error_code            text,
    error_message         text,
    error_step            text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    started_at            timestamptz,
    completed_at          timestamptz,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX failover_jobs_vm_id ON failover_jobs (vm_id, created_at DESC);
CREATE INDEX failover_jobs_status ON failover_jobs (status, created_at DESC);
CREATE INDEX failover_jobs_correlation_id ON failover_jobs (correlation_id);
CREATE INDEX failover_jobs_created_at ON failover_jobs (created_at DESC);

CREATE TABLE failover_job_steps (
    job_id           text NOT NULL REFERENCES failover_jobs (job_id) ON DELETE CASCADE,
    step_name        text NOT NULL,
    position         integer NOT NULL,
    status           text NOT NULL,
    -- The fencing token of the current lease; 0 before the first dispatch.
    attempt          integer NOT NULL DEFAULT 0,
    worker_id        text,
    lease_expires_at timestamptz,
    progress         integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    message          text,
    log              text,
    error_code       text,
    error_message    text,
    started_at       timestamptz,
    completed_at     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, step_name)
);

CREATE INDEX failover_job_steps_leases ON failover_job_steps (lease_expires_at)
    WHERE status = 'running';

-- The audit trail: one row per operation on a job, keyed by correlation id.
CREATE TABLE job_tracking (
    id             bigserial PRIMARY KEY,
    correlation_id uuid NOT NULL,
    job_id         text,
    operation      text NOT NULL,
    status         text NOT NULL,
    error_message  text,
    details        jsonb,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX job_tracking_correlation_id ON job_tracking (correlation_id, id);
CREATE INDEX job_tracking_job_id ON job_tracking (job_id, id);

-- Step tasks to publish, committed with the state change that caused them.
CREATE TABLE outbox (
    id             bigserial PRIMARY KEY,
    job_id         text NOT NULL,
    step_name      text NOT NULL,
    attempt        integer NOT NULL,
    correlation_id uuid NOT NULL,
    routing_key    text NOT NULL,
    payload        bytea NOT NULL,
    available_at   timestamptz NOT NULL DEFAULT now(),
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz,
    publish_attempts integer NOT NULL DEFAULT 0,
    last_error     text
);

CREATE INDEX outbox_unpublished ON outbox (available_at, id) WHERE published_at IS NULL;
