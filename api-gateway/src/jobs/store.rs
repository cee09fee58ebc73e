//! The SQL of jobs, steps, the audit trail and the outbox. Functions that
//! change state take the caller's transaction, so a state change, its audit
//! rows and the dispatches it causes commit together.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use failover_core::orchestration::StepUpdate;
use failover_core::{JobStatus, StepStatus};

use super::model::{JOB_COLUMNS, JobDetail, JobRow, LockedJob, STEP_COLUMNS, StepRow};
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
    pub now: DateTime<Utc>,
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
        context["snapshot_name"] = serde_json::to_value(&snapshot).map_err(StoreError::corrupt)?;
        let inserted = sqlx::query(
            "INSERT INTO failover_jobs (job_id, correlation_id, vm_id, vm_name, job_type, status,
               source_vm_spec, network_mappings, task_context, skip_validation, skip_snapshot,
               skip_virtio_injection, auto_cleanup, test_duration, custom_config,
               notification_config, linstor_snapshot_name, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17)
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
}

pub async fn enqueue(tx: &mut PgConnection, entry: OutboxEntry<'_>) -> Result<(), StoreError> {
    let delay_ms = i64::try_from(entry.delay.as_millis()).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO outbox (job_id, step_name, attempt, correlation_id, routing_key, payload, available_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7::double precision / 1000))",
    )
    .bind(entry.job_id)
    .bind(entry.step_name)
    .bind(i32::try_from(entry.attempt).unwrap_or(i32::MAX))
    .bind(entry.correlation_id)
    .bind(entry.routing_key)
    .bind(entry.payload)
    .bind(delay_ms)
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
    let job: Option<LockedJob> = sqlx::query_as(
        "SELECT job_id, correlation_id, job_type, status, task_context, outputs, started_at
         FROM failover_jobs WHERE job_id = $1 FOR UPDATE",
    )
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
    pub mark_started: bool,
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
           error_code = COALESCE($6, error_code),
           error_message = COALESCE($7, error_message),
           error_step = COALESCE($8, error_step),
           started_at = CASE WHEN $9 THEN COALESCE(started_at, now()) ELSE started_at END,
           completed_at = CASE WHEN $2 IN ('completed', 'failed') THEN now() ELSE NULL END,
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
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Renews the lease of a running step held by `worker_id` at `attempt`.
/// Returns false when the lease is no longer that worker's.
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
) -> Result<bool, StoreError> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let updated = sqlx::query(
        "UPDATE failover_job_steps SET
           lease_expires_at = now() + make_interval(secs => $5::double precision / 1000),
           progress = GREATEST(progress, LEAST($6, 100)),
           message = COALESCE($7, message),
           updated_at = now()
         WHERE job_id = $1 AND step_name = $2 AND attempt = $3 AND worker_id = $4 AND status = 'running'",
    )
    .bind(job_id)
    .bind(step_name)
    .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
    .bind(worker_id)
    .bind(lease_ms)
    .bind(i32::try_from(progress).unwrap_or(100))
    .bind(message)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
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
