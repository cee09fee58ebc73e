//! An event applied to a job: the state machine's transition, turned into
//! the job's new record and everything that follows from it — the steps as
//! they are now, their audit rows, the dispatches, the auto-cleanup due
//! time, the VM a finished job releases, a live failover's VM marked failed
//! over, and what the metrics count.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::effects::{
    AuditEntry, AuditOperation, DispatchOrder, Effects, MetricEvent, Redispatch, StepWrite,
};
use crate::job::{JobRecord, StepError, StepRecord, outputs};
use crate::orchestration::{self, Event, Transition};
use crate::pipeline::{JobType, StepName};
use crate::rules::{Refusal, Rules};
use crate::{JobStatus, StepStatus};

/// What comes with an event besides the event itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFacts {
    /// The worker that claimed or reported.
    pub worker_id: Option<String>,
    /// Outputs a step produced.
    pub outputs: BTreeMap<String, String>,
    /// What the step says it did.
    pub message: Option<String>,
    /// The step's log.
    pub log: Option<String>,
}

/// Applies `event` to `job` at `now`.
pub fn apply(
    job: &JobRecord,
    event: &Event,
    facts: EventFacts,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<Effects, Refusal> {
    let transition = orchestration::apply(&job.state(), event, &rules.retry)?;
    Ok(effects_of(job, &transition, Some(event), facts, rules, now))
}

/// The effects of `transition` (which `event` caused; `None` for a job's
/// creation) on `job`.
pub fn effects_of(
    job: &JobRecord,
    transition: &Transition,
    event: Option<&Event>,
    facts: EventFacts,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Effects {
    let mut next = job.clone();
    let mut effects = Effects::default();
    let event_step = event.and_then(Event::step);

    // Steps added to undo what the job did come after the others.
    let mut position = next.steps.iter().map(|s| s.position + 1).max().unwrap_or(0);
    for added in &transition.added_steps {
        if next.step(*added).is_none() {
            next.steps.push(StepRecord::new(*added, position));
            position += 1;
        }
    }
    let mut written: Vec<StepName> = transition.added_steps.clone();
    for update in &transition.step_updates {
        let Some(step) = next.step_mut(update.step) else {
            continue;
        };
        let is_event_step = event_step == Some(update.step);
        step.status = update.status;
        step.attempt = update.attempt;
        let running = update.status == StepStatus::Running;
        step.message = match (&update.message, facts.message.as_ref()) {
            (Some(m), _) => Some(m.clone()),
            (None, Some(m)) if is_event_step => Some(m.clone()),
            _ if running => None,
            _ => step.message.take(),
        };
        step.error = match &update.error {
            Some(e) => Some(StepError {
                code: e.code,
                message: e.message.clone(),
            }),
            None if matches!(
                update.status,
                StepStatus::Running | StepStatus::Completed | StepStatus::Skipped
            ) =>
            {
                None
            }
            None => step.error.take(),
        };
        if running {
            step.worker_id = facts.worker_id.clone();
            step.lease_expires_at = Some(now + chrono_duration(rules.lease));
            step.progress = 0;
            step.started_at = step.started_at.or(Some(now));
        } else {
            step.lease_expires_at = None;
        }
        if matches!(update.status, StepStatus::Completed | StepStatus::Skipped) {
            step.progress = 100;
        }
        step.completed_at = update.status.is_done().then_some(now);
        effects.audit.push(AuditEntry {
            correlation_id: job.correlation_id,
            job_id: job.job_id.clone(),
            operation: AuditOperation::Step(update.step),
            status: update.status.as_str().to_owned(),
            error_message: update.error.as_ref().map(|e| e.message.clone()),
            details: Some(json!({
                "attempt": update.attempt,
                "message": update.message,
                "error_code": update.error.as_ref().map(|e| e.code.as_str()),
                "worker_id": facts.worker_id,
            })),
        });
        if !written.contains(&update.step) {
            written.push(update.step);
        }
    }
    for name in written {
        if let Some(step) = next.step(name) {
            effects.steps.push(StepWrite {
                job_id: job.job_id.clone(),
                step: step.clone(),
                log: facts.log.clone().filter(|_| event_step == Some(name)),
            });
        }
    }

    // The job itself.
    next.outputs.extend(facts.outputs);
    if let Some(vm) = next.outputs.get(outputs::DESTINATION_VM_ID) {
        next.destination_vm_id = Some(vm.clone());
    }
    next.status = transition.job_status;
    next.current_step = transition.current_step;
    next.cancel_requested = transition.cancel_requested;
    if transition.clear_error {
        next.failure = None;
    }
    if let Some(error) = &transition.job_error {
        next.failure = Some(error.clone());
    }
    if matches!(event, Some(Event::Claimed { .. })) {
        next.started_at = next.started_at.or(Some(now));
    }
    next.completed_at = if next.status.is_terminal() {
        next.completed_at.or(Some(now))
    } else {
        None
    };
    let mut state = job.state();
    state.absorb(transition);
    next.holds_vm = state.holds_vm();
    let status_changed = next.status != job.status;
    if status_changed
        && next.status == JobStatus::Completed
        && next.job_type == JobType::Test
        && next.auto_cleanup
    {
        next.auto_cleanup_at = Some(now + chrono_duration(auto_cleanup_after(job, rules)));
    }
    if status_changed && event.is_some() {
        effects.audit.push(AuditEntry {
            correlation_id: job.correlation_id,
            job_id: job.job_id.clone(),
            operation: AuditOperation::Job(job.job_type),
            status: next.status.as_str().to_owned(),
            error_message: transition.job_error.as_ref().map(|e| e.message.clone()),
            details: transition
                .job_error
                .as_ref()
                .map(|e| json!({"error_code": e.code.as_str(), "step": e.step.as_str()})),
        });
    }

    // What is dispatched, and what the metrics count.
    let cause = match event {
        Some(Event::LeaseExpired { step, .. }) => {
            effects
                .metrics
                .push(MetricEvent::LeaseExpired { step: *step });
            Some(Redispatch::LeaseExpired)
        }
        Some(Event::Failed { .. }) => Some(Redispatch::Failed),
        Some(Event::RetryRequested) => Some(Redispatch::Retried),
        _ => None,
    };
    for dispatch in &transition.dispatch {
        if dispatch.attempt > 1
            && let Some(cause) = cause
        {
            effects.metrics.push(MetricEvent::StepRedispatched {
                step: dispatch.step,
                cause,
            });
        }
        effects.dispatch.push(DispatchOrder {
            job_id: job.job_id.clone(),
            step: dispatch.step,
            attempt: dispatch.attempt,
            delay: dispatch.delay,
        });
    }
    if status_changed && next.status.is_terminal() {
        effects.metrics.push(MetricEvent::JobFinished {
            job_type: job.job_type,
            status: next.status,
            seconds: (now - job.created_at).as_seconds_f64().max(0.0),
            error: next
                .failure
                .as_ref()
                .filter(|_| next.status == JobStatus::Failed)
                .map(|f| f.code),
        });
    }

    // The VM: a live failover that completed moved it for good; a job that
    // no longer holds it (or a cleanup that released its test) lets the
    // next job waiting for it start.
    let mut released = job.holds_vm && !next.holds_vm;
    if status_changed && next.status == JobStatus::Completed {
        match job.job_type {
            JobType::Live => effects.vms_failed_over.push(job.vm_id),
            JobType::Cleanup => {
                if let Some(parent) = &job.parent_job_id {
                    effects.released_jobs.push(parent.clone());
                    effects.changed.push(parent.clone());
                    released = true;
                }
            }
            JobType::Test => {}
        }
    }
    if released {
        effects.released_vms.push(job.vm_id);
    }
    effects.changed.insert(0, job.job_id.clone());
    if same_row(job, &next) {
        effects.unchanged_jobs.push(job.job_id.clone());
    }
    effects.jobs.push(next);
    effects
}

/// Whether the job's own row (all but its steps) is the same.
fn same_row(a: &JobRecord, b: &JobRecord) -> bool {
    let without_steps = |j: &JobRecord| JobRecord {
        steps: Vec::new(),
        ..j.clone()
    };
    without_steps(a) == without_steps(b)
}

/// How long a completed test failover with auto-cleanup stays up.
pub fn auto_cleanup_after(job: &JobRecord, rules: &Rules) -> Duration {
    job.test_duration.unwrap_or(rules.default_test_duration)
}

pub(crate) fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
