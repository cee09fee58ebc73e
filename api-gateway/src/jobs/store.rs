//! The SQL of jobs, steps, the audit trail and the outbox. Functions that
//! change state take the caller's transaction, so a state change, its audit
//! rows and the dispatches it causes commit together.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use failover_core::orchestration::StepUpdate;
use failover_core::{JobStatus, StepStatus};

use super::model::{
    JOB_COLUMNS, JobDetail, JobRow, LOCKED_JOB_COLUMNS, LockedJob, STEP_COLUMNS, StepRow,
};
use crate::db::StoreError;

/// The channel the outbox relay listens on.
pub const OUTBOX_CHANNEL: &str = "failover_outbox";

#[derive(Debug)]
pub struct NewJob<'a> {
    pub job_type: &'a str,
    pub job_id_prefix: &'a str,
    pub correlation_id: Uuid,
    pub vm_id: Uuid,
    pub vm_name: &'a str,
    pub source_vm_spec: String,
    pub network_mappings: String,
    pub task_context: serde_json::Value,
    pub skip_validation: bool,
    pub skip_snapshot: bool,
    pub skip_virtio_injection: bool,
    pub auto_cleanup: bool,
    pub test_duration: Option<&'a str>,
    pub custom_config: Option<&'a serde_json::Value>,
    pub notification_config: Option<&'a serde_json::Value>,
    /// `None` when the snapshot step is skipped; otherwise the name with
    /// `{ts}` standing for the job's unix seconds.
    pub snapshot_name_template: Option<String>,
    pub rollback_on_failure: bool,
    pub parent_job_id: Option<&'a str>,
    /// Outputs inherited from the parent job (a cleanup acts on them).
    pub outputs: serde_json::Value,
    pub now: DateTime<Utc>,
    /// The W3C trace context every span of the job belongs to.
    pub traceparent: Option<String>,
}

/// Inserts the job under `<prefix>-<vm_id>-<unix seconds>`. Two requests for
/// one VM in the same second get consecutive seconds, so ids stay unique and
/// keep the documented format.
pub async fn insert_job(tx: &mut PgConnection, job: &NewJob<'_>) -> Result<String, StoreError> {
    let mut seconds = job.now.timestamp();
    loop {
        let job_id = format!("{}-{}-{seconds}", job.job_id_prefix, job.vm_id);
        let snapshot = job
            .snapshot_name_template
            .as_ref()
            .map(|t| t.replace("{ts}", &seconds.to_string()));
        let mut context = job.task_context.clone();
        if job.parent_job_id.is_none() {
            context["snapshot_name"] =
                serde_json::to_value(&snapshot).map_err(StoreError::corrupt)?;
        }
        let inserted = sqlx::query(
            "INSERT INTO failover_jobs (job_id, correlation_id, vm_id, vm_name, job_type, status,
               source_vm_spec, network_mappings, task_context, skip_validation, skip_snapshot,
               skip_virtio_injection, auto_cleanup, test_duration, custom_config,
               notification_config, linstor_snapshot_name, created_at, updated_at,
               rollback_on_failure, parent_job_id, outputs, traceparent)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17, $18, $19, $20, $21)
             ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(&job_id)
        .bind(job.correlation_id)
        .bind(job.vm_id)
        .bind(job.vm_name)
        .bind(job.job_type)
        .bind(&job.source_vm_spec)
        .bind(&job.network_mappings)
        .bind(context)
        .bind(job.skip_validation)
        .bind(job.skip_snapshot)
        .bind(job.skip_virtio_injection)
        .bind(job.auto_cleanup)
        .bind(job.test_duration)
        .bind(job.custom_config)
        .bind(job.notification_config)
        .bind(&snapshot)
        .bind(job.now)
        .bind(job.rollback_on_failure)
        .bind(job.parent_job_id)
        .bind(&job.outputs)
        .bind(&job.traceparent)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(job_id);
        }
        seconds += 1;
    }
}

pub async fn insert_step(
    tx: &mut PgConnection,
    job_id: &str,
    step_name: &str,
    position: i32,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO failover_job_steps (job_id, step_name, position, status) VALUES ($1, $2, $3, 'pending')",
    )
    .bind(job_id)
    .bind(step_name)
    .bind(position)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// One audit row.
pub async fn track(
    tx: &mut PgConnection,
    correlation_id: Uuid,
    job_id: &str,
    operation: &str,
    status: &str,
    error_message: Option<&str>,
    details: Option<serde_json::Value>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO job_tracking (correlation_id, job_id, operation, status, error_message, details)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(correlation_id)
    .bind(job_id)
    .bind(operation)
    .bind(status)
    .bind(error_message)
    .bind(details)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[derive(Debug)]
pub struct OutboxEntry<'a> {
    pub job_id: &'a str,
    pub step_name: &'a str,
    pub attempt: u32,
    pub correlation_id: Uuid,
    pub routing_key: &'a str,
    pub payload: Vec<u8>,
    pub delay: Duration,
    /// The trace context of the transition that dispatched the step.
    pub traceparent: Option<String>,
}

pub async fn enqueue(tx: &mut PgConnection, entry: OutboxEntry<'_>) -> Result<(), StoreError> {
    let delay_ms = i64::try_from(entry.delay.as_millis()).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO outbox (job_id, step_name, attempt, correlation_id, routing_key, payload, available_at, traceparent)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7::double precision / 1000), $8)",
    )
    .bind(entry.job_id)
    .bind(entry.step_name)
    .bind(i32::try_from(entry.attempt).unwrap_or(i32::MAX))
    .bind(entry.correlation_id)
    .bind(entry.routing_key)
    .bind(entry.payload)
    .bind(delay_ms)
    .bind(entry.traceparent)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(OUTBOX_CHANNEL)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Locks the job and its steps for a state change.
pub async fn lock_job(
    tx: &mut PgConnection,
    job_id: &str,
) -> Result<Option<(LockedJob, Vec<StepRow>)>, StoreError> {
    let job: Option<LockedJob> = sqlx::query_as(&format!(
        "SELECT {LOCKED_JOB_COLUMNS} FROM failover_jobs WHERE job_id = $1 FOR UPDATE"
    ))
    .bind(job_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(job) = job else {
        return Ok(None);
    };
    let steps: Vec<StepRow> = sqlx::query_as(&format!(
        "SELECT {STEP_COLUMNS} FROM failover_job_steps WHERE job_id = $1 ORDER BY position FOR UPDATE"
    ))
    .bind(job_id)
    .fetch_all(&mut *tx)
    .await?;
    Ok(Some((job, steps)))
}

/// Extra facts that come with an event.
#[derive(Debug, Default)]
pub struct StepFacts<'a> {
    pub worker_id: Option<&'a str>,
    pub lease: Option<Duration>,
    pub log: Option<&'a str>,
    pub message: Option<&'a str>,
}

pub async fn update_step(
    tx: &mut PgConnection,
    job_id: &str,
    update: &StepUpdate,
    facts: &StepFacts<'_>,
) -> Result<(), StoreError> {
    let running = update.status == StepStatus::Running;
    let done = update.status.is_done();
    let lease_ms = facts
        .lease
        .filter(|_| running)
        .map(|l| i64::try_from(l.as_millis()).unwrap_or(i64::MAX));
    let message = update.message.as_deref().or(facts.message);
    sqlx::query(
        "UPDATE failover_job_steps SET
           status = $3,
           attempt = $4,
           message = CASE WHEN $5::text IS NOT NULL THEN $5 WHEN $3 = 'running' THEN NULL ELSE message END,
           error_code = CASE WHEN $6::text IS NOT NULL THEN $6 WHEN $3 IN ('running', 'completed', 'skipped') THEN NULL ELSE error_code END,
           error_message = CASE WHEN $7::text IS NOT NULL THEN $7 WHEN $3 IN ('running', 'completed', 'skipped') THEN NULL ELSE error_message END,
           worker_id = CASE WHEN $3 = 'running' THEN $8 ELSE worker_id END,
           lease_expires_at = CASE WHEN $3 = 'running' THEN now() + make_interval(secs => $9::double precision / 1000) ELSE NULL END,
           log = COALESCE($10, log),
           progress = CASE WHEN $3 IN ('completed', 'skipped') THEN 100 WHEN $3 = 'running' THEN 0 ELSE progress END,
           started_at = CASE WHEN $3 = 'running' THEN COALESCE(started_at, now()) ELSE started_at END,
           completed_at = CASE WHEN $11 THEN now() ELSE NULL END,
           updated_at = now()
         WHERE job_id = $1 AND step_name = $2",
    )
    .bind(job_id)
    .bind(update.step.as_str())
    .bind(update.status.as_str())
    .bind(i32::try_from(update.attempt).unwrap_or(i32::MAX))
    .bind(message)
    .bind(update.error.as_ref().map(|e| e.code.as_str()))
    .bind(update.error.as_ref().map(|e| e.message.as_str()))
    .bind(facts.worker_id)
    .bind(lease_ms)
    .bind(facts.log)
    .bind(done)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[derive(Debug)]
pub struct JobUpdate<'a> {
    pub status: JobStatus,
    pub current_step: Option<&'a str>,
    pub outputs: serde_json::Value,
    pub destination_vm_id: Option<&'a str>,
    pub error: Option<(&'a str, &'a str, &'a str)>,
    pub clear_error: bool,
    pub mark_started: bool,
    pub cancel_requested: bool,
    pub holds_vm: bool,
    /// When a completed test failover with auto-cleanup is cleaned up.
    pub auto_cleanup_after: Option<Duration>,
}

pub async fn update_job(
    tx: &mut PgConnection,
    job_id: &str,
    update: &JobUpdate<'_>,
) -> Result<(), StoreError> {
    let (error_code, error_message, error_step) = match update.error {
        Some((code, message, step)) => (Some(code), Some(message), Some(step)),
        None => (None, None, None),
    };
    sqlx::query(
        "UPDATE failover_jobs SET
           status = $2,
           current_step = $3,
           outputs = $4,
           destination_vm_id = COALESCE($5, destination_vm_id),
           error_code = CASE WHEN $10 THEN NULL ELSE COALESCE($6, error_code) END,
           error_message = CASE WHEN $10 THEN NULL ELSE COALESCE($7, error_message) END,
           error_step = CASE WHEN $10 THEN NULL ELSE COALESCE($8, error_step) END,
           started_at = CASE WHEN $9 THEN COALESCE(started_at, now()) ELSE started_at END,
           completed_at = CASE WHEN $2 IN ('completed', 'failed', 'cancelled') THEN COALESCE(completed_at, now()) ELSE NULL END,
           cancel_requested = $11,
           holds_vm = $12,
           auto_cleanup_at = CASE WHEN $13::bigint IS NOT NULL
             THEN now() + make_interval(secs => $13::double precision / 1000) ELSE auto_cleanup_at END,
           waiting_for = CASE WHEN $2 = 'pending' THEN waiting_for ELSE NULL END,
           updated_at = now()
         WHERE job_id = $1",
    )
    .bind(job_id)
    .bind(update.status.as_str())
    .bind(update.current_step)
    .bind(&update.outputs)
    .bind(update.destination_vm_id)
    .bind(error_code)
    .bind(error_message)
    .bind(error_step)
    .bind(update.mark_started)
    .bind(update.clear_error)
    .bind(update.cancel_requested)
    .bind(update.holds_vm)
    .bind(
        update
            .auto_cleanup_after
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Renews the lease of a running step held by `worker_id` at `attempt`.
/// Returns whether the lease is still that worker's, and whether the job
/// was cancelled.
#[allow(clippy::too_many_arguments)]
pub async fn renew_lease(
    pool: &PgPool,
    job_id: &str,
    step_name: &str,
    attempt: u32,
    worker_id: &str,
    lease: Duration,
    progress: u32,
    message: Option<&str>,
) -> Result<(bool, bool), StoreError> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let renewed: Option<(bool,)> = sqlx::query_as(
        "UPDATE failover_job_steps s SET
           lease_expires_at = now() + make_interval(secs => $5::double precision / 1000),
           progress = GREATEST(s.progress, LEAST($6, 100)),
           message = COALESCE($7, s.message),
           updated_at = now()
         FROM failover_jobs j
         WHERE s.job_id = $1 AND s.step_name = $2 AND s.attempt = $3 AND s.worker_id = $4
           AND s.status = 'running' AND j.job_id = s.job_id
         RETURNING j.cancel_requested",
    )
    .bind(job_id)
    .bind(step_name)
    .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
    .bind(worker_id)
    .bind(lease_ms)
    .bind(i32::try_from(progress).unwrap_or(100))
    .bind(message)
    .fetch_optional(pool)
    .await?;
    if renewed.is_some() {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(crate::events::JOB_EVENTS_CHANNEL)
            .bind(job_id)
            .execute(pool)
            .await?;
    }
    Ok(match renewed {
        Some((cancel,)) => (true, cancel),
        None => (false, false),
    })
}

/// Locks the VM's inventory row: admissions of one VM are serialized.
pub async fn lock_vm(tx: &mut PgConnection, vm_id: Uuid) -> Result<(), StoreError> {
    sqlx::query("SELECT 1 FROM vms WHERE vm_id = $1 FOR UPDATE")
        .bind(vm_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A job that holds a VM.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Holder {
    pub job_id: String,
    pub job_type: String,
    pub status: String,
    pub parent_job_id: Option<String>,
    /// Whether its first step was dispatched.
    pub started: bool,
}

/// The jobs holding `vm_id`, oldest first.
pub async fn holders(tx: &mut PgConnection, vm_id: Uuid) -> Result<Vec<Holder>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT j.job_id, j.job_type, j.status, j.parent_job_id,
                EXISTS (SELECT 1 FROM failover_job_steps s
                        WHERE s.job_id = j.job_id AND s.status NOT IN ('pending', 'skipped', 'cancelled')) AS started
         FROM failover_jobs j WHERE j.vm_id = $1 AND j.holds_vm
         ORDER BY j.created_at, j.job_id",
    )
    .bind(vm_id)
    .fetch_all(&mut *tx)
    .await?)
}

pub async fn set_waiting_for(
    tx: &mut PgConnection,
    job_id: &str,
    waiting_for: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE failover_jobs SET waiting_for = $2 WHERE job_id = $1")
        .bind(job_id)
        .bind(waiting_for)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Releases a job's hold on its VM (a test failover whose cleanup finished).
pub async fn release(tx: &mut PgConnection, job_id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE failover_jobs SET holds_vm = false, updated_at = now() WHERE job_id = $1")
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

pub async fn link_cleanup(
    tx: &mut PgConnection,
    job_id: &str,
    cleanup_job_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE failover_jobs SET cleanup_job_id = $2, auto_cleanup_at = NULL, updated_at = now() WHERE job_id = $1",
    )
    .bind(job_id)
    .bind(cleanup_job_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Test failovers whose auto-cleanup is due, locked so one replica takes each.
pub async fn due_auto_cleanups(
    tx: &mut PgConnection,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT job_id FROM failover_jobs
         WHERE auto_cleanup_at <= now() AND cleanup_job_id IS NULL AND status = 'completed'
         ORDER BY auto_cleanup_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

pub async fn mark_failed_over(tx: &mut PgConnection, vm_id: Uuid) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE vms SET replication_state = 'failed-over', updated_at = now() WHERE vm_id = $1",
    )
    .bind(vm_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A stored answer to a request with an `Idempotency-Key`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredResponse {
    pub request_hash: String,
    pub job_id: String,
    pub response_status: i32,
    pub response_body: serde_json::Value,
}

pub async fn idempotent_response(
    pool: &PgPool,
    key: &str,
    endpoint: &str,
) -> Result<Option<StoredResponse>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT request_hash, job_id, response_status, response_body FROM idempotency_keys
         WHERE idempotency_key = $1 AND endpoint = $2",
    )
    .bind(key)
    .bind(endpoint)
    .fetch_optional(pool)
    .await?)
}

/// Stores the answer; false when another request stored one for the key first.
pub async fn store_idempotent_response(
    tx: &mut PgConnection,
    key: &str,
    endpoint: &str,
    response: &StoredResponse,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (idempotency_key, endpoint, request_hash, job_id, response_status, response_body)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(key)
    .bind(endpoint)
    .bind(&response.request_hash)
    .bind(&response.job_id)
    .bind(response.response_status)
    .bind(&response.response_body)
    .execute(&mut *tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Running steps whose lease ran out.
pub async fn expired_leases(
    pool: &PgPool,
    limit: i64,
) -> Result<Vec<(String, String, i32)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT job_id, step_name, attempt FROM failover_job_steps
         WHERE status = 'running' AND lease_expires_at < now()
         ORDER BY lease_expires_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

pub async fn get_job(pool: &PgPool, job_id: &str) -> Result<Option<JobDetail>, StoreError> {
    let job: Option<JobRow> = sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM failover_jobs WHERE job_id = $1"
    ))
    .bind(job_id)
    .fetch_optional(pool)
    .await?;
    let Some(job) = job else {
        return Ok(None);
    };
    let steps: Vec<StepRow> = sqlx::query_as(&format!(
        "SELECT {STEP_COLUMNS} FROM failover_job_steps WHERE job_id = $1 ORDER BY position"
    ))
    .bind(job_id)
    .fetch_all(pool)
    .await?;
    Ok(Some(JobDetail { job, steps }))
}

/// Tells every replica's watchers that the job changed (sent at commit).
pub async fn notify_changed(tx: &mut PgConnection, job_id: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(crate::events::JOB_EVENTS_CHANNEL)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// One recorded change of a job, from the audit trail.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TrackingRow {
    pub id: i64,
    pub operation: String,
    pub status: String,
    pub error_message: Option<String>,
    pub details: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

/// The job's recorded changes after `after_id`, in order.
pub async fn tracking_since(
    pool: &PgPool,
    job_id: &str,
    after_id: i64,
) -> Result<Vec<TrackingRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, operation, status, error_message, details, created_at FROM job_tracking
         WHERE job_id = $1 AND id > $2 ORDER BY id",
    )
    .bind(job_id)
    .bind(after_id)
    .fetch_all(pool)
    .await?)
}

/// The id of the job's latest recorded change.
pub async fn last_tracking_id(pool: &PgPool, job_id: &str) -> Result<i64, StoreError> {
    let (id,): (Option<i64>,) =
        sqlx::query_as("SELECT max(id) FROM job_tracking WHERE job_id = $1")
            .bind(job_id)
            .fetch_one(pool)
            .await?;
    Ok(id.unwrap_or(0))
}

/// A job row within a transaction.
pub async fn get_job_in(tx: &mut PgConnection, job_id: &str) -> Result<Option<JobRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM failover_jobs WHERE job_id = $1"
    ))
    .bind(job_id)
    .fetch_optional(&mut *tx)
    .await?)
}

/// The newest job of a correlation id.
pub async fn job_id_by_correlation(
    pool: &PgPool,
    correlation_id: Uuid,
) -> Result<Option<String>, StoreError> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT job_id FROM failover_jobs WHERE correlation_id = $1 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(correlation_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id,)| id))
}

#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    pub status: Option<String>,
    pub job_type: Option<String>,
    pub vm_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
    /// Only jobs created at or after this time.
    pub created_since: Option<DateTime<Utc>>,
    pub limit: i64,
    pub offset: i64,
}

fn push_filters<'a>(query: &mut QueryBuilder<'a, Postgres>, filter: &'a JobFilter) {
    query.push(" WHERE true");
    if let Some(status) = &filter.status {
        query.push(" AND status = ").push_bind(status);
    }
    if let Some(job_type) = &filter.job_type {
        query.push(" AND job_type = ").push_bind(job_type);
    }
    if let Some(vm_id) = filter.vm_id {
        query.push(" AND vm_id = ").push_bind(vm_id);
    }
    if let Some(correlation_id) = filter.correlation_id {
        query
            .push(" AND correlation_id = ")
            .push_bind(correlation_id);
    }
    if let Some(since) = filter.created_since {
        query.push(" AND created_at >= ").push_bind(since);
    }
}

/// A page of jobs, newest first, and how many match in all.
pub async fn list_jobs(
    pool: &PgPool,
    filter: &JobFilter,
) -> Result<(Vec<JobRow>, i64), StoreError> {
    let mut count = QueryBuilder::new("SELECT count(*) FROM failover_jobs");
    push_filters(&mut count, filter);
    let (total,): (i64,) = count.build_query_as().fetch_one(pool).await?;
    let mut page = QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM failover_jobs"));
    push_filters(&mut page, filter);
    page.push(" ORDER BY created_at DESC, job_id DESC LIMIT ")
        .push_bind(filter.limit)
        .push(" OFFSET ")
        .push_bind(filter.offset);
    let rows: Vec<JobRow> = page.build_query_as().fetch_all(pool).await?;
    Ok((rows, total))
}
