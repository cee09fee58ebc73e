//! Accepting work: a test or live failover of a registered VM, and the
//! cleanup of a test failover. A new job commits with its steps, its audit
//! row and its first dispatch, or waits behind the VM's earlier operation.
//!
//! The rules: only a replicated VM fails over (`VM_NOT_FOUND` otherwise);
//! a VM has at most `max_operations_per_vm` unfinished operations
//! (`VM_BUSY`); a live failover is refused while a test failover of the VM
//! is up; network mappings resolve request → the VM's own network → the
//! configured default; a cleanup applies to a completed test failover, or a
//! failed or cancelled job that left state behind, once.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::JobStatus;
use crate::effects::{AuditEntry, AuditOperation, Effects, MetricEvent, NewJob};
use crate::holds::Holder;
use crate::inventory::{ReplicationState, VmRegistration};
use crate::job::{JobRecord, StepRecord, TaskContext, first_free};
use crate::lifecycle::{self, EventFacts};
use crate::orchestration::{Event, JobState};
use crate::pipeline::{JobType, SkipFlags};
use crate::rules::Rules;

/// A registered VM, as admission reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredVm {
    pub vm_id: Uuid,
    pub spec: VmRegistration,
}

/// A validated request for a test or live failover.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverRequest {
    pub job_type: JobType,
    pub vm_id: Uuid,
    pub vm_name: String,
    pub skips: SkipFlags,
    pub auto_cleanup: bool,
    /// As given ("30m") and as a duration.
    pub test_duration: Option<(String, Duration)>,
    pub rollback_on_failure: bool,
    pub network_mappings: BTreeMap<String, String>,
    pub custom_config: Option<Value>,
    pub notification_config: Option<Value>,
    pub correlation_id: Uuid,
}

/// What admission reads, under the VM's lock.
#[derive(Debug, Clone)]
pub struct AdmissionFacts<'a> {
    pub vm: Option<&'a RegisteredVm>,
    /// The jobs holding the VM, oldest first.
    pub holders: &'a [Holder],
    /// Which of the job's id candidates ([`crate::job::id_candidates`]) exist.
    pub taken_ids: &'a [String],
    pub candidates: &'a [String],
    pub now: DateTime<Utc>,
}

/// Why a request is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionRefusal {
    #[error("Validation failed: VM not found or not replicated")]
    VmNotFound { vm_id: Uuid },
    #[error("Validation failed: VM not replicated (replication_state {state}){}",
        if state == "failed-over" { "; it was failed over live: register it again to fail it over again" } else { "" })]
    NotReplicated { vm_id: Uuid, state: String },
    #[error("VM has a test failover {job_id} that is still up ({status}); clean it up first")]
    TestFailoverUp { job_id: String, status: JobStatus },
    #[error(
        "VM has {count} unfinished operations, the most it may have; the oldest is {oldest} ({status})"
    )]
    TooManyOperations {
        count: usize,
        oldest: String,
        status: JobStatus,
    },
    #[error("too many jobs of this VM were accepted in the last seconds; try again")]
    NoFreeJobId,
    #[error("job {0} not found")]
    JobNotFound(String),
    /// The cleanup does not apply to the job in its state.
    #[error("{message}")]
    NotCleanable { job_id: String, message: String },
}

/// An accepted job: its id, what it waits behind, and what to write.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub job_id: String,
    pub waiting_for: Option<String>,
    pub effects: Effects,
}

impl Admitted {
    /// The new job as a holder of its VM: a later admission of the VM
    /// (in the same transaction) waits behind it.
    pub fn as_holder(&self) -> Option<Holder> {
        let job = self
            .effects
            .new_jobs
            .iter()
            .find(|j| j.record.job_id == self.job_id)?;
        Some(Holder {
            job_id: self.job_id.clone(),
            job_type: job.record.job_type,
            status: job.record.status,
            started: !self.effects.dispatch.is_empty(),
        })
    }
}

/// Admits a test or live failover of `facts.vm`.
pub fn admit(
    req: &FailoverRequest,
    facts: &AdmissionFacts<'_>,
    rules: &Rules,
) -> Result<Admitted, AdmissionRefusal> {
    let Some(vm) = facts.vm else {
        return Err(AdmissionRefusal::VmNotFound { vm_id: req.vm_id });
    };
    if vm.spec.replication() != Some(ReplicationState::Replicated) {
        return Err(AdmissionRefusal::NotReplicated {
            vm_id: req.vm_id,
            state: vm.spec.replication_state.clone(),
        });
    }
    if req.job_type == JobType::Live
        && let Some(test) = facts.holders.iter().find(|h| h.job_type == JobType::Test)
    {
        return Err(AdmissionRefusal::TestFailoverUp {
            job_id: test.job_id.clone(),
            status: test.status,
        });
    }
    if facts.holders.len() >= rules.max_operations_per_vm as usize {
        let oldest = &facts.holders[0];
        return Err(AdmissionRefusal::TooManyOperations {
            count: facts.holders.len(),
            oldest: oldest.job_id.clone(),
            status: oldest.status,
        });
    }
    let (job_id, seconds) =
        first_free(facts.candidates, facts.taken_ids).ok_or(AdmissionRefusal::NoFreeJobId)?;

    let mappings = resolve_networks(req, &vm.spec, rules);
    let short_vm = &req.vm_id.to_string()[..8];
    let snapshot_name =
        (!req.skips.skip_snapshot).then(|| format!("{}-{short_vm}-{seconds}", req.job_type));
    let context = TaskContext {
        vm_id: req.vm_id,
        vm: vm.spec.clone(),
        network_mappings: mappings.clone(),
        placement: rules.placement.clone(),
        snapshot_name: snapshot_name.clone(),
    };
    let source_vm_spec = json!({
        "cpu_count": vm.spec.cpu_count,
        "memory_mb": vm.spec.memory_mb,
        "os_family": vm.spec.os_family.as_str(),
        "vm_id": req.vm_id,
        "vm_name": vm.spec.vm_name,
    });
    let waiting_for = facts.holders.last().map(|h| h.job_id.clone());
    let record = new_record(NewRecord {
        job_id: job_id.clone(),
        correlation_id: req.correlation_id,
        vm_id: req.vm_id,
        vm_name: req.vm_name.clone(),
        job_type: req.job_type,
        context,
        outputs: BTreeMap::new(),
        rollback_on_failure: req.rollback_on_failure,
        parent_job_id: None,
        auto_cleanup: req.auto_cleanup,
        test_duration: req.test_duration.as_ref().map(|(_, d)| *d),
        snapshot_name,
        waiting_for: waiting_for.clone(),
        now: facts.now,
    });
    let new_job = NewJob {
        record,
        source_vm_spec: source_vm_spec.to_string(),
        network_mappings: serde_json::to_string(&mappings).unwrap_or_default(),
        skips: req.skips,
        test_duration: req.test_duration.as_ref().map(|(text, _)| text.clone()),
        custom_config: req.custom_config.clone(),
        notification_config: req.notification_config.clone(),
    };
    let audit = vec![AuditEntry {
        correlation_id: req.correlation_id,
        job_id: job_id.clone(),
        operation: AuditOperation::Job(req.job_type),
        status: JobStatus::Pending.as_str().to_owned(),
        error_message: None,
        details: Some(json!({
            "vm_id": req.vm_id,
            "vm_name": req.vm_name,
            "network_mappings": mappings,
            "rollback_on_failure": req.rollback_on_failure,
        })),
    }];
    let effects = create(new_job, audit, waiting_for.is_none(), rules, facts.now);
    Ok(Admitted {
        job_id,
        waiting_for,
        effects,
    })
}

/// What starts a cleanup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupTrigger {
    /// An operator asked for it.
    Request,
    /// The test's `test_duration` is over.
    AutoCleanup,
}

impl CleanupTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupTrigger::Request => "request",
            CleanupTrigger::AutoCleanup => "auto_cleanup",
        }
    }
}

/// Admits the cleanup of `target`: a job of its own, linked both ways. The
/// ids are those of the cleanup job ([`crate::job::id_candidates`]).
pub fn cleanup(
    target: &JobRecord,
    trigger: CleanupTrigger,
    correlation_id: Uuid,
    candidates: &[String],
    taken_ids: &[String],
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<Admitted, AdmissionRefusal> {
    let refuse = |message: String| AdmissionRefusal::NotCleanable {
        job_id: target.job_id.clone(),
        message,
    };
    if target.job_type == JobType::Cleanup {
        return Err(refuse(
            "a cleanup job cannot be cleaned up; retry it instead".into(),
        ));
    }
    if let Some(existing) = &target.cleanup_job_id {
        return Err(refuse(format!(
            "job already has cleanup job {existing}; inspect it, and retry it if it failed"
        )));
    }
    let cleanable = match target.status {
        JobStatus::Completed => target.job_type == JobType::Test,
        JobStatus::Failed | JobStatus::Cancelled => target.holds_vm,
        _ => false,
    };
    if !cleanable {
        return Err(refuse(match target.status {
            JobStatus::Completed => {
                "a completed live failover is the permanent cut-over; there is nothing to clean up"
                    .into()
            }
            JobStatus::Failed | JobStatus::Cancelled => format!(
                "job is {} and left nothing behind; there is nothing to clean up",
                target.status.as_str()
            ),
            other => format!(
                "job is {}; wait for it to finish, or cancel it",
                other.as_str()
            ),
        }));
    }
    let (job_id, _) = first_free(candidates, taken_ids).ok_or(AdmissionRefusal::NoFreeJobId)?;
    let has_snapshot = target.snapshot_name.is_some();
    let record = new_record(NewRecord {
        job_id: job_id.clone(),
        correlation_id,
        vm_id: target.vm_id,
        vm_name: target.vm_name.clone(),
        job_type: JobType::Cleanup,
        context: target.context.clone(),
        // A cleanup acts on what the test made.
        outputs: target.outputs.clone(),
        rollback_on_failure: false,
        parent_job_id: Some(target.job_id.clone()),
        auto_cleanup: false,
        test_duration: None,
        snapshot_name: target.snapshot_name.clone(),
        waiting_for: None,
        now,
    });
    let new_job = NewJob {
        record,
        source_vm_spec: source_spec_of(target),
        network_mappings: serde_json::to_string(&target.context.network_mappings)
            .unwrap_or_default(),
        skips: SkipFlags {
            skip_snapshot: !has_snapshot,
            ..Default::default()
        },
        test_duration: None,
        custom_config: None,
        notification_config: None,
    };
    let details = json!({"test_job_id": target.job_id, "cleanup_job_id": job_id, "trigger": trigger.as_str()});
    let audit = vec![
        AuditEntry {
            correlation_id,
            job_id: job_id.clone(),
            operation: AuditOperation::Job(JobType::Cleanup),
            status: JobStatus::Pending.as_str().to_owned(),
            error_message: None,
            details: Some(details.clone()),
        },
        AuditEntry {
            correlation_id: target.correlation_id,
            job_id: target.job_id.clone(),
            operation: AuditOperation::CleanupRequested,
            status: JobStatus::Pending.as_str().to_owned(),
            error_message: None,
            details: Some(details),
        },
    ];
    let mut effects = create(new_job, audit, true, rules, now);
    let mut linked = target.clone();
    linked.cleanup_job_id = Some(job_id.clone());
    linked.auto_cleanup_at = None;
    effects.jobs.push(linked);
    effects.changed.push(target.job_id.clone());
    Ok(Admitted {
        job_id,
        waiting_for: None,
        effects,
    })
}

/// The accepted VM as the job's source: kept from the job it cleans up.
fn source_spec_of(target: &JobRecord) -> String {
    let vm = &target.context.vm;
    json!({
        "cpu_count": vm.cpu_count,
        "memory_mb": vm.memory_mb,
        "os_family": vm.os_family.as_str(),
        "vm_id": target.vm_id,
        "vm_name": vm.vm_name,
    })
    .to_string()
}

/// Source network -> target network for every NIC of the VM: the request's
/// mapping, else the VM's own network for this kind of failover, else the
/// configured default ("" when there is none: validation names it).
fn resolve_networks(
    req: &FailoverRequest,
    vm: &VmRegistration,
    rules: &Rules,
) -> BTreeMap<String, String> {
    vm.nics
        .iter()
        .map(|nic| {
            let own = match req.job_type {
                JobType::Live => nic
                    .live_network_id
                    .clone()
                    .or_else(|| rules.default_live_network_id.clone()),
                _ => nic
                    .test_network_id
                    .clone()
                    .or_else(|| rules.default_test_network_id.clone()),
            };
            let target = req
                .network_mappings
                .get(&nic.source_network)
                .cloned()
                .or(own)
                .unwrap_or_default();
            (nic.source_network.clone(), target)
        })
        .collect()
}

struct NewRecord {
    job_id: String,
    correlation_id: Uuid,
    vm_id: Uuid,
    vm_name: String,
    job_type: JobType,
    context: TaskContext,
    outputs: BTreeMap<String, String>,
    rollback_on_failure: bool,
    parent_job_id: Option<String>,
    auto_cleanup: bool,
    test_duration: Option<Duration>,
    snapshot_name: Option<String>,
    waiting_for: Option<String>,
    now: DateTime<Utc>,
}

fn new_record(n: NewRecord) -> JobRecord {
    JobRecord {
        steps: n
            .job_type
            .pipeline()
            .iter()
            .enumerate()
            .map(|(position, step)| StepRecord::new(*step, position as i32))
            .collect(),
        job_id: n.job_id,
        correlation_id: n.correlation_id,
        vm_id: n.vm_id,
        vm_name: n.vm_name,
        job_type: n.job_type,
        status: JobStatus::Pending,
        current_step: None,
        context: n.context,
        outputs: n.outputs,
        destination_vm_id: None,
        failure: None,
        rollback_on_failure: n.rollback_on_failure && n.job_type != JobType::Cleanup,
        cancel_requested: false,
        holds_vm: true,
        parent_job_id: n.parent_job_id,
        cleanup_job_id: None,
        auto_cleanup: n.auto_cleanup,
        test_duration: n.test_duration,
        snapshot_name: n.snapshot_name,
        waiting_for: n.waiting_for,
        created_at: n.now,
        started_at: None,
        completed_at: None,
        auto_cleanup_at: None,
    }
}

/// The effects of creating `job`: the job and its steps (those skipped by
/// request marked so), its audit rows, and, when its VM is free, its start.
fn create(
    job: NewJob,
    audit: Vec<AuditEntry>,
    start: bool,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Effects {
    let (_, created) = JobState::new(
        job.record.job_type,
        job.skips,
        job.record.rollback_on_failure,
    );
    let mut effects = Effects {
        audit,
        metrics: vec![MetricEvent::JobStarted {
            job_type: job.record.job_type,
        }],
        ..Default::default()
    };
    let created = lifecycle::effects_of(
        &job.record,
        &created,
        None,
        EventFacts::default(),
        rules,
        now,
    );
    let mut record = created.jobs[0].clone();
    effects.extend(Effects {
        jobs: Vec::new(),
        ..created
    });
    // A new job whose VM is free starts at once (a new job is never refused
    // a start; were it, it would wait like a job behind another).
    if start
        && let Ok(mut started) =
            lifecycle::apply(&record, &Event::Start, EventFacts::default(), rules, now)
    {
        record = started.jobs.remove(0);
        effects.extend(started);
    }
    // Every step of a new job is inserted, changed or not.
    for step in &record.steps {
        if !effects
            .steps
            .iter()
            .any(|w| w.job_id == record.job_id && w.step.name == step.name)
        {
            effects.steps.push(crate::effects::StepWrite {
                job_id: record.job_id.clone(),
                step: step.clone(),
                log: None,
            });
        }
    }
    effects.steps.sort_by_key(|w| w.step.position);
    effects.new_jobs.push(NewJob { record, ..job });
    effects
}
