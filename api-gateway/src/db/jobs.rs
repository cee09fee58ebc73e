//! Reading jobs: the record a decision needs (the job and its steps, locked,
//! with the database's clock, in one statement), the holders of a VM, the
//! ids a new job may take, the timers' due work, and the rows the API shows.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use failover_core::holds::Holder;
use failover_core::job::{JobRecord, StepError, StepRecord, TaskContext};
use failover_core::orchestration::JobError;
use failover_core::{ErrorCode, JobStatus, JobType, StepName, StepStatus};

use super::StoreError;
use super::types::Db;

/// A job read for a decision, locked for the rest of the transaction.
#[derive(Debug, Clone)]
pub struct Locked {
    pub record: JobRecord,
    /// The job's trace (W3C `traceparent`), when traces are exported.
    pub traceparent: Option<String>,
    /// The database's clock when it was read: every time a decision writes
    /// is this one, whichever replica decides.
    pub now: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct LockedRow {
    job_id: String,
    correlation_id: Uuid,
    vm_id: Uuid,
    vm_name: String,
    job_type: Db<JobType>,
    status: Db<JobStatus>,
    current_step: Option<Db<StepName>>,
    task_context: Json<TaskContext>,
    outputs: Json<BTreeMap<String, String>>,
    destination_vm_id: Option<String>,
    error_code: Option<Db<ErrorCode>>,
    error_message: Option<String>,
    error_step: Option<Db<StepName>>,
    rollback_on_failure: bool,
    cancel_requested: bool,
    holds_vm: bool,
    parent_job_id: Option<String>,
    cleanup_job_id: Option<String>,
    auto_cleanup: bool,
    test_duration: Option<String>,
    linstor_snapshot_name: Option<String>,
    waiting_for: Option<String>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    auto_cleanup_at: Option<DateTime<Utc>>,
    traceparent: Option<String>,
    now: DateTime<Utc>,
}

const LOCK_JOBS: &str = "SELECT job_id, correlation_id, vm_id, vm_name, job_type, status,
        current_step, task_context, outputs, destination_vm_id, error_code, error_message,
        error_step, rollback_on_failure, cancel_requested, holds_vm, parent_job_id,
        cleanup_job_id, auto_cleanup, test_duration, linstor_snapshot_name, waiting_for,
        created_at, started_at, completed_at, auto_cleanup_at, traceparent, now() AS now
    FROM failover_jobs JOIN unnest($1::text[]) AS ids(id) ON job_id = ids.id
    ORDER BY job_id FOR UPDATE OF failover_jobs";

const LOCK_STEPS: &str = "WITH steps AS (
        SELECT job_id, step_name, position, status, attempt, worker_id, lease_expires_at, progress,
               message, error_code, error_message, started_at, completed_at
        FROM failover_job_steps JOIN unnest($1::text[]) AS ids(id) ON job_id = ids.id
        ORDER BY job_id, position FOR UPDATE OF failover_job_steps
    )
    SELECT job_id,
           array_agg(step_name ORDER BY position) AS step_name,
           array_agg(position ORDER BY position) AS step_position,
           array_agg(status ORDER BY position) AS step_status,
           array_agg(attempt ORDER BY position) AS step_attempt,
           array_agg(worker_id ORDER BY position) AS step_worker,
           array_agg(lease_expires_at ORDER BY position) AS step_lease,
           array_agg(progress ORDER BY position) AS step_progress,
           array_agg(message ORDER BY position) AS step_message,
           array_agg(error_code ORDER BY position) AS step_error_code,
           array_agg(error_message ORDER BY position) AS step_error_message,
           array_agg(started_at ORDER BY position) AS step_started,
           array_agg(completed_at ORDER BY position) AS step_completed
    FROM steps GROUP BY job_id";

/// Locks `job_id` and its steps and reads them.
pub async fn lock(tx: &mut PgConnection, job_id: &str) -> Result<Option<Locked>, StoreError> {
    Ok(lock_many(tx, &[job_id.to_owned()]).await?.pop())
}

/// Locks jobs (in the order of their ids, the order every writer locks
/// them in), then their steps, and reads them: the steps are read by a
/// statement that starts once every job is locked, so it sees every step
/// the job's previous writer added.
pub async fn lock_many(
    tx: &mut PgConnection,
    job_ids: &[String],
) -> Result<Vec<Locked>, StoreError> {
    let jobs: Vec<LockedRow> = sqlx::query_as(LOCK_JOBS)
        .bind(job_ids)
        .fetch_all(&mut *tx)
        .await?;
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    let steps: Vec<StepsRow> = sqlx::query_as(LOCK_STEPS)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
    let mut steps: HashMap<String, StepsRow> =
        steps.into_iter().map(|s| (s.job_id.clone(), s)).collect();
    jobs.into_iter()
        .map(|job| {
            let of_job = steps.remove(&job.job_id).unwrap_or_default();
            job.into_locked(of_job)
        })
        .collect()
}

#[derive(sqlx::FromRow, Default)]
struct StepsRow {
    job_id: String,
    step_name: Vec<Db<StepName>>,
    step_position: Vec<i32>,
    step_status: Vec<Db<StepStatus>>,
    step_attempt: Vec<i32>,
    step_worker: Vec<Option<String>>,
    step_lease: Vec<Option<DateTime<Utc>>>,
    step_progress: Vec<i32>,
    step_message: Vec<Option<String>>,
    step_error_code: Vec<Option<Db<ErrorCode>>>,
    step_error_message: Vec<Option<String>>,
    step_started: Vec<Option<DateTime<Utc>>>,
    step_completed: Vec<Option<DateTime<Utc>>>,
}

impl LockedRow {
    fn into_locked(self, s: StepsRow) -> Result<Locked, StoreError> {
        let steps = (0..s.step_name.len())
            .map(|i| {
                Ok(StepRecord {
                    name: s.step_name[i].0,
                    position: *at(&s.step_position, i)?,
                    status: at(&s.step_status, i)?.0,
                    attempt: u32::try_from(*at(&s.step_attempt, i)?).unwrap_or_default(),
                    worker_id: at(&s.step_worker, i)?.clone(),
                    lease_expires_at: *at(&s.step_lease, i)?,
                    progress: u32::try_from(*at(&s.step_progress, i)?).unwrap_or_default(),
                    message: at(&s.step_message, i)?.clone(),
                    error: at(&s.step_error_code, i)?.map(|code| StepError {
                        code: code.0,
                        message: at(&s.step_error_message, i)
                            .ok()
                            .cloned()
                            .flatten()
                            .unwrap_or_default(),
                    }),
                    started_at: *at(&s.step_started, i)?,
                    completed_at: *at(&s.step_completed, i)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let failure = match (self.error_code, self.error_step) {
            (Some(code), Some(step)) => Some(JobError {
                step: step.0,
                code: code.0,
                message: self.error_message.unwrap_or_default(),
            }),
            _ => None,
        };
        let test_duration = self
            .test_duration
            .as_deref()
            .map(|d| humantime::parse_duration(d).map_err(StoreError::corrupt))
            .transpose()?;
        Ok(Locked {
            record: JobRecord {
                job_id: self.job_id,
                correlation_id: self.correlation_id,
                vm_id: self.vm_id,
                vm_name: self.vm_name,
                job_type: self.job_type.0,
                status: self.status.0,
                current_step: self.current_step.map(|s| s.0),
                context: self.task_context.0,
                outputs: self.outputs.0,
                destination_vm_id: self.destination_vm_id,
                failure,
                rollback_on_failure: self.rollback_on_failure,
                cancel_requested: self.cancel_requested,
                holds_vm: self.holds_vm,
                parent_job_id: self.parent_job_id,
                cleanup_job_id: self.cleanup_job_id,
                auto_cleanup: self.auto_cleanup,
                test_duration,
                snapshot_name: self.linstor_snapshot_name,
                waiting_for: self.waiting_for,
                created_at: self.created_at,
                started_at: self.started_at,
                completed_at: self.completed_at,
                auto_cleanup_at: self.auto_cleanup_at,
                steps,
            },
            traceparent: self.traceparent,
            now: self.now,
        })
    }
}

fn at<T>(values: &[T], i: usize) -> Result<&T, StoreError> {
    values
        .get(i)
        .ok_or_else(|| StoreError::corrupt("a step's columns disagree in length"))
}

/// A step of a job, locked, with its job's cancel flag and the database's clock.
#[derive(Debug, Clone)]
pub struct LockedStep {
    pub step: StepRecord,
    pub cancel_requested: bool,
    pub now: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct LockedStepRow {
    position: i32,
    status: Db<StepStatus>,
    attempt: i32,
    worker_id: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    progress: i32,
    message: Option<String>,
    error_code: Option<Db<ErrorCode>>,
    error_message: Option<String>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    cancel_requested: bool,
    now: DateTime<Utc>,
}

/// Locks one step (not its job: a heartbeat never waits for a transition
/// of another step) and reads it.
pub async fn lock_step(
    tx: &mut PgConnection,
    job_id: &str,
    step: StepName,
) -> Result<Option<LockedStep>, StoreError> {
    let row: Option<LockedStepRow> = sqlx::query_as(
        "SELECT s.position, s.status, s.attempt, s.worker_id, s.lease_expires_at, s.progress,
                s.message, s.error_code, s.error_message, s.started_at, s.completed_at,
                j.cancel_requested, now() AS now
         FROM failover_job_steps s JOIN failover_jobs j ON j.job_id = s.job_id
         WHERE s.job_id = $1 AND s.step_name = $2
         FOR UPDATE OF s",
    )
    .bind(job_id)
    .bind(Db(step))
    .fetch_optional(&mut *tx)
    .await?;
    Ok(row.map(|r| LockedStep {
        step: StepRecord {
            name: step,
            position: r.position,
            status: r.status.0,
            attempt: u32::try_from(r.attempt).unwrap_or_default(),
            worker_id: r.worker_id,
            lease_expires_at: r.lease_expires_at,
            progress: u32::try_from(r.progress).unwrap_or_default(),
            message: r.message,
            error: r.error_code.map(|code| StepError {
                code: code.0,
                message: r.error_message.unwrap_or_default(),
            }),
            started_at: r.started_at,
            completed_at: r.completed_at,
        },
        cancel_requested: r.cancel_requested,
        now: r.now,
    }))
}

#[derive(sqlx::FromRow)]
struct HolderRow {
    job_id: String,
    job_type: Db<JobType>,
    status: Db<JobStatus>,
    started: bool,
}

/// The jobs holding `vm_id`, oldest first.
pub async fn holders(tx: &mut PgConnection, vm_id: Uuid) -> Result<Vec<Holder>, StoreError> {
    let rows: Vec<HolderRow> = sqlx::query_as(
        "SELECT j.job_id, j.job_type, j.status,
                EXISTS (SELECT 1 FROM failover_job_steps s
                        WHERE s.job_id = j.job_id AND s.status NOT IN ('pending', 'skipped', 'cancelled')) AS started
         FROM failover_jobs j WHERE j.vm_id = $1 AND j.holds_vm
         ORDER BY j.created_at, j.job_id",
    )
    .bind(vm_id)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Holder {
            job_id: r.job_id,
            job_type: r.job_type.0,
            status: r.status.0,
            started: r.started,
        })
        .collect())
}

/// Which of `candidates` are ids of existing jobs. The candidates share
/// their prefix and differ in the seconds at their end, in order: one range
/// of the primary key holds them all.
pub async fn taken_ids(
    tx: &mut PgConnection,
    candidates: &[String],
) -> Result<Vec<String>, StoreError> {
    let (Some(first), Some(last)) = (candidates.first(), candidates.last()) else {
        return Ok(Vec::new());
    };
    let taken: Vec<String> =
        sqlx::query_scalar("SELECT job_id FROM failover_jobs WHERE job_id BETWEEN $1 AND $2")
            .bind(first)
            .bind(last)
            .fetch_all(&mut *tx)
            .await?;
    Ok(taken
        .into_iter()
        .filter(|id| candidates.contains(id))
        .collect())
}

/// Locks the VM's inventory row: admissions and releases of one VM are
/// serialized.
pub async fn lock_vm(tx: &mut PgConnection, vm_id: Uuid) -> Result<(), StoreError> {
    sqlx::query("SELECT 1 FROM vms WHERE vm_id = $1 FOR UPDATE")
        .bind(vm_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Test failovers whose auto-cleanup is due, locked so one replica takes each.
pub async fn due_auto_cleanups(
    tx: &mut PgConnection,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT job_id FROM failover_jobs
         WHERE auto_cleanup_at <= now() AND cleanup_job_id IS NULL AND status = 'completed'
         ORDER BY auto_cleanup_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?)
}

/// Running steps whose lease ran out: (job, step, attempt).
pub async fn expired_leases(
    pool: &PgPool,
    limit: i64,
) -> Result<Vec<(String, StepName, u32)>, StoreError> {
    let rows: Vec<(String, Db<StepName>, i32)> = sqlx::query_as(
        "SELECT job_id, step_name, attempt FROM failover_job_steps
         WHERE status = 'running' AND lease_expires_at < now()
         ORDER BY lease_expires_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(job, step, attempt)| (job, step.0, u32::try_from(attempt).unwrap_or_default()))
        .collect())
}

/// A job row as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub job_id: String,
    pub correlation_id: Uuid,
    pub vm_id: Uuid,
    pub vm_name: String,
    #[sqlx(try_from = "Db<JobType>")]
    pub job_type: JobType,
    #[sqlx(try_from = "Db<JobStatus>")]
    pub status: JobStatus,
    pub current_step: Option<Db<StepName>>,
    pub source_vm_spec: String,
    pub network_mappings: String,
    pub skip_validation: bool,
    pub skip_snapshot: bool,
    pub skip_virtio_injection: bool,
    pub auto_cleanup: bool,
    pub test_duration: Option<String>,
    pub custom_config: Option<serde_json::Value>,
    pub notification_config: Option<serde_json::Value>,
    pub linstor_snapshot_name: Option<String>,
    pub destination_vm_id: Option<String>,
    pub error_code: Option<Db<ErrorCode>>,
    pub error_message: Option<String>,
    pub error_step: Option<Db<StepName>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub rollback_on_failure: bool,
    pub cancel_requested: bool,
    pub holds_vm: bool,
    pub parent_job_id: Option<String>,
    pub cleanup_job_id: Option<String>,
    pub auto_cleanup_at: Option<DateTime<Utc>>,
    pub waiting_for: Option<String>,
    pub outputs: Json<BTreeMap<String, String>>,
}

const JOB_COLUMNS: &str = "job_id, correlation_id, vm_id, vm_name, job_type, status, current_step, \
    source_vm_spec, network_mappings, skip_validation, skip_snapshot, skip_virtio_injection, \
    auto_cleanup, test_duration, custom_config, notification_config, linstor_snapshot_name, \
    destination_vm_id, error_code, error_message, error_step, created_at, started_at, \
    completed_at, updated_at, rollback_on_failure, cancel_requested, holds_vm, parent_job_id, \
    cleanup_job_id, auto_cleanup_at, waiting_for, outputs";

/// A step row as the API shows it, with its log.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StepRow {
    #[sqlx(try_from = "Db<StepName>")]
    pub step_name: StepName,
    pub position: i32,
    #[sqlx(try_from = "Db<StepStatus>")]
    pub status: StepStatus,
    pub attempt: i32,
    pub worker_id: Option<String>,
    pub progress: i32,
    pub message: Option<String>,
    pub log: Option<String>,
    pub error_code: Option<Db<ErrorCode>>,
    pub error_message: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

const STEP_COLUMNS: &str = "step_name, position, status, attempt, worker_id, progress, message, \
    log, error_code, error_message, started_at, completed_at";

/// A job with its steps, in pipeline order.
#[derive(Debug, Clone)]
pub struct JobDetail {
    pub job: JobRow,
    pub steps: Vec<StepRow>,
}

pub async fn detail(pool: &PgPool, job_id: &str) -> Result<Option<JobDetail>, StoreError> {
    // A job changes when its steps do: its updated_at is the latest of both.
    let job: Option<JobRow> = sqlx::query_as(&format!(
        "SELECT {}, GREATEST(updated_at, (SELECT max(s.updated_at) FROM failover_job_steps s
                WHERE s.job_id = failover_jobs.job_id)) AS updated_at
         FROM failover_jobs WHERE job_id = $1",
        JOB_COLUMNS.replace(" updated_at,", "")
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
pub async fn by_correlation(
    pool: &PgPool,
    correlation_id: Uuid,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT job_id FROM failover_jobs WHERE correlation_id = $1 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(correlation_id)
    .fetch_optional(pool)
    .await?)
}

/// Which jobs a list shows.
#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub job_type: Option<JobType>,
    pub vm_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
    /// Only jobs created at or after this time.
    pub created_since: Option<DateTime<Utc>>,
    pub limit: i64,
    pub offset: i64,
}

impl JobFilter {
    /// Whether `job` is one this filter lists (ignoring the page).
    pub fn matches(&self, job: &JobRow) -> bool {
        self.status.is_none_or(|s| job.status == s)
            && self.job_type.is_none_or(|t| job.job_type == t)
            && self.vm_id.is_none_or(|v| job.vm_id == v)
            && self.correlation_id.is_none_or(|c| job.correlation_id == c)
            && self.created_since.is_none_or(|t| job.created_at >= t)
    }
}

fn push_filters<'a>(query: &mut QueryBuilder<'a, Postgres>, filter: &'a JobFilter) {
    query.push(" WHERE true");
    if let Some(status) = filter.status {
        query.push(" AND status = ").push_bind(Db(status));
    }
    if let Some(job_type) = filter.job_type {
        query.push(" AND job_type = ").push_bind(Db(job_type));
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

/// How many jobs a list counts exactly; beyond, `total` is the planner's
/// estimate (the count of a million rows would cost more than the page).
pub const EXACT_TOTAL_UP_TO: i64 = 10_000;

/// How many jobs match: exact up to [`EXACT_TOTAL_UP_TO`], estimated beyond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Total {
    pub count: i64,
    pub exact: bool,
}

/// A page of jobs, newest first, and how many match.
pub async fn list(pool: &PgPool, filter: &JobFilter) -> Result<(Vec<JobRow>, Total), StoreError> {
    let mut page = QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM failover_jobs"));
    push_filters(&mut page, filter);
    page.push(" ORDER BY created_at DESC, job_id DESC LIMIT ")
        .push_bind(filter.limit)
        .push(" OFFSET ")
        .push_bind(filter.offset);
    let rows: Vec<JobRow> = page.build_query_as().fetch_all(pool).await?;
    // A page shorter than asked for ends the list: its end is the total.
    if (rows.len() as i64) < filter.limit && (filter.offset == 0 || !rows.is_empty()) {
        let count = filter.offset + rows.len() as i64;
        return Ok((rows, Total { count, exact: true }));
    }
    let mut count = QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM failover_jobs");
    push_filters(&mut count, filter);
    count
        .push(" LIMIT ")
        .push_bind(EXACT_TOTAL_UP_TO + 1)
        .push(") capped");
    let (counted,): (i64,) = count.build_query_as().fetch_one(pool).await?;
    if counted <= EXACT_TOTAL_UP_TO {
        return Ok((
            rows,
            Total {
                count: counted,
                exact: true,
            },
        ));
    }
    let mut explain = QueryBuilder::new("EXPLAIN (FORMAT JSON) SELECT 1 FROM failover_jobs");
    push_filters(&mut explain, filter);
    let (plan,): (Json<serde_json::Value>,) = explain.build_query_as().fetch_one(pool).await?;
    let estimate = plan.0[0]["Plan"]["Plan Rows"]
        .as_f64()
        .map_or(counted, |rows| rows.round() as i64);
    Ok((
        rows,
        Total {
            count: estimate.max(counted),
            exact: false,
        },
    ))
}
