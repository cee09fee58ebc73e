//! The one function that writes a decision: every part of an [`Effects`]
//! in the caller's transaction — new jobs, then in one statement the steps,
//! the audit rows, the outbox dispatches, the jobs' new state, released
//! holds, VMs failed over, and the notifications to watchers and relays
//! (sent by Postgres at commit).

use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message as _;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use failover_core::effects::Effects;
use failover_core::{ErrorCode, JobStatus, JobType, StepName, StepStatus};

use super::StoreError;
use super::types::Db;
use super::outbox::OutboxRow;
use crate::dispatch;
use crate::events::JOB_EVENTS_CHANNEL;

/// The traces dispatches continue (W3C `traceparent`): the decision's, and
/// for a job whose start it includes, that job's own.
#[derive(Debug, Clone, Default)]
pub struct Traces {
    pub decision: Option<String>,
    pub jobs: Vec<(String, Option<String>)>,
}

impl Traces {
    pub fn of(decision: Option<String>) -> Self {
        Traces {
            decision,
            jobs: Vec::new(),
        }
    }

    fn of_job(&self, job_id: &str) -> Option<&str> {
        self.jobs
            .iter()
            .find(|(id, _)| id == job_id)
            .map_or(self.decision.as_deref(), |(_, t)| t.as_deref())
    }
}

/// Writes `effects`; the dispatches continue `traces`. Returns the outbox
/// rows written that are due at once, for the relay's fast path.
pub async fn apply(
    tx: &mut PgConnection,
    effects: &Effects,
    traces: &Traces,
) -> Result<Vec<OutboxRow>, StoreError> {
    let new_jobs = NewJobs::of(effects, traces);
    let steps = Steps::of(effects);
    let audit = Audit::of(effects);
    let outbox = Outbox::of(effects, traces)?;
    let jobs = Jobs::of(effects);
    // One statement of the parts there are: a decision writes a few of them,
    // and each shape is prepared and planned once per connection.
    let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new("WITH ");
    let mut parts = 0;
    let mut part = |sql: &mut QueryBuilder<'_, Postgres>, name: &str| {
        if parts > 0 {
            sql.push(", ");
        }
        parts += 1;
        sql.push(name).push(" AS (");
    };
    // New jobs first; their steps in the same statement (the foreign key is
    // checked at its end).
    if !new_jobs.job_id.is_empty() {
        part(&mut sql, "new_jobs");
        sql.push(
            "INSERT INTO failover_jobs (job_id, correlation_id, vm_id, vm_name, job_type, status,
                current_step, source_vm_spec, network_mappings, task_context, skip_validation,
                skip_snapshot, skip_virtio_injection, auto_cleanup, test_duration, custom_config,
                notification_config, linstor_snapshot_name, created_at, updated_at,
                rollback_on_failure, cancel_requested, holds_vm, parent_job_id, waiting_for,
                outputs, traceparent)
             SELECT j, c, v, vn, t, st, cs, svs, nm, tc::jsonb, sv, ss, svi, ac, td, cc::jsonb,
                nc::jsonb, sn, ca, ca, rb, cr, hv, pj, wf, o::jsonb, tp FROM unnest(",
        );
        let mut list = sql.separated(", ");
        list.push_bind(&new_jobs.job_id).push_unseparated("::text[]");
        list.push_bind(&new_jobs.correlation_id).push_unseparated("::uuid[]");
        list.push_bind(&new_jobs.vm_id).push_unseparated("::uuid[]");
        list.push_bind(&new_jobs.vm_name).push_unseparated("::text[]");
        list.push_bind(&new_jobs.job_type).push_unseparated("::text[]");
        list.push_bind(&new_jobs.status).push_unseparated("::text[]");
        list.push_bind(&new_jobs.current_step).push_unseparated("::text[]");
        list.push_bind(&new_jobs.source_vm_spec).push_unseparated("::text[]");
        list.push_bind(&new_jobs.network_mappings).push_unseparated("::text[]");
        list.push_bind(&new_jobs.task_context).push_unseparated("::text[]");
        list.push_bind(&new_jobs.skip_validation).push_unseparated("::bool[]");
        list.push_bind(&new_jobs.skip_snapshot).push_unseparated("::bool[]");
        list.push_bind(&new_jobs.skip_virtio_injection).push_unseparated("::bool[]");
        list.push_bind(&new_jobs.auto_cleanup).push_unseparated("::bool[]");
        list.push_bind(&new_jobs.test_duration).push_unseparated("::text[]");
        list.push_bind(&new_jobs.custom_config).push_unseparated("::text[]");
        list.push_bind(&new_jobs.notification_config).push_unseparated("::text[]");
        list.push_bind(&new_jobs.snapshot_name).push_unseparated("::text[]");
        list.push_bind(&new_jobs.created_at).push_unseparated("::timestamptz[]");
        list.push_bind(&new_jobs.rollback_on_failure).push_unseparated("::bool[]");
        list.push_bind(&new_jobs.cancel_requested).push_unseparated("::bool[]");
        list.push_bind(&new_jobs.holds_vm).push_unseparated("::bool[]");
        list.push_bind(&new_jobs.parent_job_id).push_unseparated("::text[]");
        list.push_bind(&new_jobs.waiting_for).push_unseparated("::text[]");
        list.push_bind(&new_jobs.outputs).push_unseparated("::text[]");
        list.push_bind(&new_jobs.traceparent).push_unseparated("::text[]");
        sql.push(
            ") AS n(j, c, v, vn, t, st, cs, svs, nm, tc, sv, ss, svi, ac, td, cc, nc, sn, ca, rb,
                   cr, hv, pj, wf, o, tp))",
        );
    }
    if !steps.job_id.is_empty() {
        part(&mut sql, "steps");
        sql.push(
            "INSERT INTO failover_job_steps AS s (job_id, step_name, position, status, attempt,
                worker_id, lease_expires_at, progress, message, log, error_code, error_message,
                started_at, completed_at)
             SELECT * FROM unnest(",
        );
        let mut list = sql.separated(", ");
        list.push_bind(&steps.job_id).push_unseparated("::text[]");
        list.push_bind(&steps.name).push_unseparated("::text[]");
        list.push_bind(&steps.position).push_unseparated("::int4[]");
        list.push_bind(&steps.status).push_unseparated("::text[]");
        list.push_bind(&steps.attempt).push_unseparated("::int4[]");
        list.push_bind(&steps.worker_id).push_unseparated("::text[]");
        list.push_bind(&steps.lease).push_unseparated("::timestamptz[]");
        list.push_bind(&steps.progress).push_unseparated("::int4[]");
        list.push_bind(&steps.message).push_unseparated("::text[]");
        list.push_bind(&steps.log).push_unseparated("::text[]");
        list.push_bind(&steps.error_code).push_unseparated("::text[]");
        list.push_bind(&steps.error_message).push_unseparated("::text[]");
        list.push_bind(&steps.started).push_unseparated("::timestamptz[]");
        list.push_bind(&steps.completed).push_unseparated("::timestamptz[]");
        sql.push(
            ")
             ON CONFLICT (job_id, step_name) DO UPDATE SET
                status = EXCLUDED.status, attempt = EXCLUDED.attempt, worker_id = EXCLUDED.worker_id,
                lease_expires_at = EXCLUDED.lease_expires_at, progress = EXCLUDED.progress,
                message = EXCLUDED.message, log = COALESCE(EXCLUDED.log, s.log),
                error_code = EXCLUDED.error_code, error_message = EXCLUDED.error_message,
                started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at,
                updated_at = now())",
        );
    }
    if !audit.job_id.is_empty() {
        part(&mut sql, "audit");
        sql.push(
            "INSERT INTO job_tracking (correlation_id, job_id, operation, status, error_message, details)
             SELECT c, j, o, st, e, d::jsonb FROM unnest(",
        );
        let mut list = sql.separated(", ");
        list.push_bind(&audit.correlation_id).push_unseparated("::uuid[]");
        list.push_bind(&audit.job_id).push_unseparated("::text[]");
        list.push_bind(&audit.operation).push_unseparated("::text[]");
        list.push_bind(&audit.status).push_unseparated("::text[]");
        list.push_bind(&audit.error_message).push_unseparated("::text[]");
        list.push_bind(&audit.details).push_unseparated("::text[]");
        sql.push(") WITH ORDINALITY AS a(c, j, o, st, e, d, n) ORDER BY n)");
    }
    if !outbox.job_id.is_empty() {
        part(&mut sql, "dispatched");
        sql.push(
            "INSERT INTO outbox (job_id, step_name, attempt, correlation_id, routing_key, payload,
                available_at, traceparent)
             SELECT j, st, att, c, st, p, now() + make_interval(secs => ms / 1000), tp FROM unnest(",
        );
        let mut list = sql.separated(", ");
        list.push_bind(&outbox.job_id).push_unseparated("::text[]");
        list.push_bind(&outbox.step).push_unseparated("::text[]");
        list.push_bind(&outbox.attempt).push_unseparated("::int4[]");
        list.push_bind(&outbox.correlation_id).push_unseparated("::uuid[]");
        list.push_bind(&outbox.payload).push_unseparated("::bytea[]");
        list.push_bind(&outbox.delay_ms).push_unseparated("::float8[]");
        list.push_bind(&outbox.traceparent).push_unseparated("::text[]");
        sql.push(") AS o(j, st, att, c, p, ms, tp) RETURNING id, job_id, step_name, attempt)");
    }
    if !jobs.job_id.is_empty() {
        part(&mut sql, "jobs");
        sql.push(
            "UPDATE failover_jobs f SET status = u.status, current_step = u.current_step,
                outputs = u.outputs::jsonb, destination_vm_id = u.destination_vm_id,
                error_code = u.error_code, error_message = u.error_message, error_step = u.error_step,
                started_at = u.started_at, completed_at = u.completed_at,
                cancel_requested = u.cancel_requested, holds_vm = u.holds_vm,
                auto_cleanup_at = u.auto_cleanup_at, waiting_for = u.waiting_for,
                cleanup_job_id = u.cleanup_job_id, updated_at = now()
             FROM unnest(",
        );
        let mut list = sql.separated(", ");
        list.push_bind(&jobs.job_id).push_unseparated("::text[]");
        list.push_bind(&jobs.status).push_unseparated("::text[]");
        list.push_bind(&jobs.current_step).push_unseparated("::text[]");
        list.push_bind(&jobs.outputs).push_unseparated("::text[]");
        list.push_bind(&jobs.destination_vm_id).push_unseparated("::text[]");
        list.push_bind(&jobs.error_code).push_unseparated("::text[]");
        list.push_bind(&jobs.error_message).push_unseparated("::text[]");
        list.push_bind(&jobs.error_step).push_unseparated("::text[]");
        list.push_bind(&jobs.started).push_unseparated("::timestamptz[]");
        list.push_bind(&jobs.completed).push_unseparated("::timestamptz[]");
        list.push_bind(&jobs.cancel_requested).push_unseparated("::bool[]");
        list.push_bind(&jobs.holds_vm).push_unseparated("::bool[]");
        list.push_bind(&jobs.auto_cleanup_at).push_unseparated("::timestamptz[]");
        list.push_bind(&jobs.waiting_for).push_unseparated("::text[]");
        list.push_bind(&jobs.cleanup_job_id).push_unseparated("::text[]");
        sql.push(
            ") AS u(job_id, status, current_step, outputs, destination_vm_id, error_code,
                error_message, error_step, started_at, completed_at, cancel_requested, holds_vm,
                auto_cleanup_at, waiting_for, cleanup_job_id)
             WHERE f.job_id = u.job_id)",
        );
    }
    if !effects.released_jobs.is_empty() {
        part(&mut sql, "released");
        sql.push("UPDATE failover_jobs SET holds_vm = false, updated_at = now() WHERE job_id = ANY(")
            .push_bind(&effects.released_jobs)
            .push("))");
    }
    if !effects.vms_failed_over.is_empty() {
        part(&mut sql, "failed_over");
        sql.push(
            "UPDATE vms SET replication_state = 'failed-over', updated_at = now() WHERE vm_id = ANY(",
        )
        .push_bind(&effects.vms_failed_over)
        .push("))");
    }
    if parts == 0 {
        if effects.changed.is_empty() {
            return Ok(Vec::new());
        }
        sql = QueryBuilder::new("");
    }
    // Sent by Postgres at commit: the watchers of the changed jobs, and the
    // relays when there is something to publish.
    sql.push(format!(
        " SELECT (SELECT count(pg_notify('{JOB_EVENTS_CHANNEL}', c)) FROM unnest("
    ))
    .push_bind(&effects.changed)
    .push("::text[]) c) AS notified");
    if outbox.job_id.is_empty() {
        sql.build().execute(&mut *tx).await?;
        return Ok(Vec::new());
    }
    sql.push(
        ", ARRAY(SELECT id FROM dispatched ORDER BY id) AS ids,
           ARRAY(SELECT job_id FROM dispatched ORDER BY id) AS job_ids,
           ARRAY(SELECT step_name FROM dispatched ORDER BY id) AS steps,
           ARRAY(SELECT attempt FROM dispatched ORDER BY id) AS attempts",
    );
    let (_, ids, job_ids, steps, attempts): (i64, Vec<i64>, Vec<String>, Vec<String>, Vec<i32>) =
        sql.build_query_as().fetch_one(&mut *tx).await?;
    Ok(outbox.due_now(&ids, &job_ids, &steps, &attempts, effects))
}

#[derive(Default)]
struct Steps {
    job_id: Vec<String>,
    name: Vec<Db<StepName>>,
    position: Vec<i32>,
    status: Vec<Db<StepStatus>>,
    attempt: Vec<i32>,
    worker_id: Vec<Option<String>>,
    lease: Vec<Option<DateTime<Utc>>>,
    progress: Vec<i32>,
    message: Vec<Option<String>>,
    log: Vec<Option<String>>,
    error_code: Vec<Option<Db<ErrorCode>>>,
    error_message: Vec<Option<String>>,
    started: Vec<Option<DateTime<Utc>>>,
    completed: Vec<Option<DateTime<Utc>>>,
}

impl Steps {
    fn of(effects: &Effects) -> Self {
        let mut s = Steps::default();
        for w in &effects.steps {
            let step = &w.step;
            s.job_id.push(w.job_id.clone());
            s.name.push(Db(step.name));
            s.position.push(step.position);
            s.status.push(Db(step.status));
            s.attempt
                .push(i32::try_from(step.attempt).unwrap_or(i32::MAX));
            s.worker_id.push(step.worker_id.clone());
            s.lease.push(step.lease_expires_at);
            s.progress
                .push(i32::try_from(step.progress.min(100)).unwrap_or(100));
            s.message.push(step.message.clone());
            s.log.push(w.log.clone());
            s.error_code.push(step.error.as_ref().map(|e| Db(e.code)));
            s.error_message
                .push(step.error.as_ref().map(|e| e.message.clone()));
            s.started.push(step.started_at);
            s.completed.push(step.completed_at);
        }
        s
    }
}

#[derive(Default)]
struct Audit {
    correlation_id: Vec<Uuid>,
    job_id: Vec<String>,
    operation: Vec<String>,
    status: Vec<String>,
    error_message: Vec<Option<String>>,
    details: Vec<Option<String>>,
}

impl Audit {
    fn of(effects: &Effects) -> Self {
        let mut a = Audit::default();
        for entry in &effects.audit {
            a.correlation_id.push(entry.correlation_id);
            a.job_id.push(entry.job_id.clone());
            a.operation.push(entry.operation.name());
            a.status.push(entry.status.clone());
            a.error_message.push(entry.error_message.clone());
            a.details
                .push(entry.details.as_ref().map(|d| d.to_string()));
        }
        a
    }
}

#[derive(Default)]
struct Outbox {
    job_id: Vec<String>,
    step: Vec<Db<StepName>>,
    attempt: Vec<i32>,
    correlation_id: Vec<Uuid>,
    payload: Vec<Vec<u8>>,
    delay_ms: Vec<f64>,
    traceparent: Vec<Option<String>>,
}

impl Outbox {
    fn of(effects: &Effects, traces: &Traces) -> Result<Self, StoreError> {
        let mut o = Outbox::default();
        for order in &effects.dispatch {
            let job = effects.job(&order.job_id).ok_or_else(|| {
                StoreError::corrupt(format!("a dispatch of job {} without it", order.job_id))
            })?;
            o.job_id.push(order.job_id.clone());
            o.step.push(Db(order.step));
            o.attempt
                .push(i32::try_from(order.attempt).unwrap_or(i32::MAX));
            o.correlation_id.push(job.correlation_id);
            o.payload
                .push(dispatch::task(job, order.step, order.attempt).encode_to_vec());
            o.delay_ms.push(millis(order.delay));
            o.traceparent
                .push(traces.of_job(&order.job_id).map(str::to_owned));
        }
        Ok(o)
    }
}

impl Outbox {
    /// The rows written with no delay, by what the insert returned.
    fn due_now(
        self,
        ids: &[i64],
        job_ids: &[String],
        steps: &[String],
        attempts: &[i32],
        effects: &Effects,
    ) -> Vec<OutboxRow> {
        let mut rows = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let Some(n) = (0..self.job_id.len()).find(|&n| {
                self.job_id[n] == job_ids[i]
                    && self.step[n].0.as_str() == steps[i]
                    && self.attempt[n] == attempts[i]
            }) else {
                continue;
            };
            if self.delay_ms[n] > 0.0 {
                continue;
            }
            rows.push(OutboxRow {
                id: *id,
                job_id: self.job_id[n].clone(),
                step_name: steps[i].clone(),
                attempt: attempts[i],
                correlation_id: self.correlation_id[n],
                routing_key: steps[i].clone(),
                payload: self.payload[n].clone(),
                traceparent: self.traceparent[n].clone(),
                vm_id: effects.job(&self.job_id[n]).map(|j| j.vm_id),
            });
        }
        rows
    }
}

#[derive(Default)]
struct Jobs {
    job_id: Vec<String>,
    status: Vec<Db<JobStatus>>,
    current_step: Vec<Option<Db<StepName>>>,
    outputs: Vec<String>,
    destination_vm_id: Vec<Option<String>>,
    error_code: Vec<Option<Db<ErrorCode>>>,
    error_message: Vec<Option<String>>,
    error_step: Vec<Option<Db<StepName>>>,
    started: Vec<Option<DateTime<Utc>>>,
    completed: Vec<Option<DateTime<Utc>>>,
    cancel_requested: Vec<bool>,
    holds_vm: Vec<bool>,
    auto_cleanup_at: Vec<Option<DateTime<Utc>>>,
    waiting_for: Vec<Option<String>>,
    cleanup_job_id: Vec<Option<String>>,
}

impl Jobs {
    fn of(effects: &Effects) -> Self {
        let mut j = Jobs::default();
        for job in effects
            .jobs
            .iter()
            .filter(|j| !effects.unchanged_jobs.contains(&j.job_id))
        {
            j.job_id.push(job.job_id.clone());
            j.status.push(Db(job.status));
            j.current_step.push(job.current_step.map(Db));
            j.outputs
                .push(serde_json::to_string(&job.outputs).unwrap_or_else(|_| "{}".into()));
            j.destination_vm_id.push(job.destination_vm_id.clone());
            j.error_code.push(job.failure.as_ref().map(|f| Db(f.code)));
            j.error_message
                .push(job.failure.as_ref().map(|f| f.message.clone()));
            j.error_step.push(job.failure.as_ref().map(|f| Db(f.step)));
            j.started.push(job.started_at);
            j.completed.push(job.completed_at);
            j.cancel_requested.push(job.cancel_requested);
            j.holds_vm.push(job.holds_vm);
            j.auto_cleanup_at.push(job.auto_cleanup_at);
            j.waiting_for.push(job.waiting_for.clone());
            j.cleanup_job_id.push(job.cleanup_job_id.clone());
        }
        j
    }
}

/// New jobs, as columns.
#[derive(Default)]
struct NewJobs {
    job_id: Vec<String>,
    correlation_id: Vec<Uuid>,
    vm_id: Vec<Uuid>,
    vm_name: Vec<String>,
    job_type: Vec<Db<JobType>>,
    status: Vec<Db<JobStatus>>,
    current_step: Vec<Option<Db<StepName>>>,
    source_vm_spec: Vec<String>,
    network_mappings: Vec<String>,
    task_context: Vec<String>,
    skip_validation: Vec<bool>,
    skip_snapshot: Vec<bool>,
    skip_virtio_injection: Vec<bool>,
    auto_cleanup: Vec<bool>,
    test_duration: Vec<Option<String>>,
    custom_config: Vec<Option<String>>,
    notification_config: Vec<Option<String>>,
    snapshot_name: Vec<Option<String>>,
    created_at: Vec<DateTime<Utc>>,
    rollback_on_failure: Vec<bool>,
    cancel_requested: Vec<bool>,
    holds_vm: Vec<bool>,
    parent_job_id: Vec<Option<String>>,
    waiting_for: Vec<Option<String>>,
    outputs: Vec<String>,
    traceparent: Vec<Option<String>>,
}

impl NewJobs {
    fn of(effects: &Effects, traces: &Traces) -> Self {
        let mut n = NewJobs::default();
        let json = |v: &serde_json::Value| v.to_string();
        for new in &effects.new_jobs {
            let job = &new.record;
            n.job_id.push(job.job_id.clone());
            n.correlation_id.push(job.correlation_id);
            n.vm_id.push(job.vm_id);
            n.vm_name.push(job.vm_name.clone());
            n.job_type.push(Db(job.job_type));
            n.status.push(Db(job.status));
            n.current_step.push(job.current_step.map(Db));
            n.source_vm_spec.push(new.source_vm_spec.clone());
            n.network_mappings.push(new.network_mappings.clone());
            n.task_context
                .push(serde_json::to_string(&job.context).unwrap_or_else(|_| "{}".into()));
            n.skip_validation.push(new.skips.skip_validation);
            n.skip_snapshot.push(new.skips.skip_snapshot);
            n.skip_virtio_injection
                .push(new.skips.skip_virtio_injection);
            n.auto_cleanup.push(job.auto_cleanup);
            n.test_duration.push(new.test_duration.clone());
            n.custom_config.push(new.custom_config.as_ref().map(json));
            n.notification_config
                .push(new.notification_config.as_ref().map(json));
            n.snapshot_name.push(job.snapshot_name.clone());
            n.created_at.push(job.created_at);
            n.rollback_on_failure.push(job.rollback_on_failure);
            n.cancel_requested.push(job.cancel_requested);
            n.holds_vm.push(job.holds_vm);
            n.parent_job_id.push(job.parent_job_id.clone());
            n.waiting_for.push(job.waiting_for.clone());
            n.outputs
                .push(serde_json::to_string(&job.outputs).unwrap_or_else(|_| "{}".into()));
            n.traceparent
                .push(traces.of_job(&job.job_id).map(str::to_owned));
        }
        n
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
