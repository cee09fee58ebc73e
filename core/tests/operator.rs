//! An operator's cancel and retry, read like the API reference.

mod support;

use uuid::Uuid;

use failover_core::coordination::StepOutcome;
use failover_core::effects::AuditOperation;
use failover_core::operator::{self, Command, Outcome};
use failover_core::orchestration::StepFailure;
use failover_core::pipeline::{JobType, SkipFlags, StepName};
use failover_core::rules::Refusal;
use failover_core::{ErrorCode, JobStatus, StepStatus};

use support::*;

#[test]
fn cancelling_a_job_whose_step_runs_waits_for_the_worker_and_a_second_cancel_is_harmless() {
    let (job, _) = admitted(JobType::Test, SkipFlags::default());
    let job = after(
        &claim(&job, StepName::Validation, "w-1", at(1)),
        &job.job_id,
    );
    let request = Uuid::from_u128(42);
    let Outcome::Applied { status, effects } =
        operator::apply(&job, Command::Cancel, request, &rules(), at(2)).unwrap()
    else {
        panic!("a cancel of a running job applies");
    };
    assert_eq!(status, JobStatus::Cancelling);
    let entry = effects
        .audit
        .iter()
        .find(|a| a.operation == AuditOperation::CancelRequested)
        .expect("the trail records the operator's cancel");
    assert_eq!(
        entry.details.as_ref().unwrap()["request_correlation_id"],
        request.to_string()
    );
    let job = after(&effects, &job.job_id);
    assert!(job.cancel_requested);
    assert_eq!(
        job.step(StepName::Validation).unwrap().status,
        StepStatus::Running,
        "the worker stops it when its heartbeat tells it"
    );
    assert_eq!(
        operator::apply(&job, Command::Cancel, request, &rules(), at(3)).unwrap(),
        Outcome::AlreadyDone("the job is already being cancelled".into())
    );
}

#[test]
fn a_cancelled_job_that_never_ran_ends_at_once() {
    let (job, _) = admitted(JobType::Test, SkipFlags::default());
    let Outcome::Applied { status, effects } =
        operator::apply(&job, Command::Cancel, Uuid::nil(), &rules(), at(1)).unwrap()
    else {
        panic!("applies");
    };
    assert_eq!(status, JobStatus::Cancelled);
    let job = after(&effects, &job.job_id);
    assert!(!job.holds_vm);
    assert_eq!(effects.released_vms, [vm_id()]);
    assert_eq!(
        operator::apply(&job, Command::Cancel, Uuid::nil(), &rules(), at(2)).unwrap(),
        Outcome::AlreadyDone("the job is already cancelled".into())
    );
}

#[test]
fn a_failed_job_that_kept_its_state_retries_from_the_failed_step() {
    let mut req = request(JobType::Test);
    req.rollback_on_failure = false;
    let admitted = admit_with(&req, &registered("replicated"), &[], &[], at(0)).unwrap();
    let mut job = admitted.effects.new_jobs[0].record.clone();
    for step in [StepName::Validation, StepName::Snapshot] {
        job = after(&claim(&job, step, "w-1", at(1)), &job.job_id);
        job = after(&report(&job, step, "w-1", succeeded(), at(2)), &job.job_id);
    }
    job = after(
        &claim(&job, StepName::VirtioInjection, "w-1", at(3)),
        &job.job_id,
    );
    let failed = StepOutcome::Failed(StepFailure {
        code: ErrorCode::VirtioFailed,
        message: "no drivers for this Windows version".into(),
        retryable: false,
    });
    job = after(
        &report(&job, StepName::VirtioInjection, "w-1", failed, at(4)),
        &job.job_id,
    );
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job.holds_vm, "kept state holds the VM");
    let Outcome::Applied { status, effects } =
        operator::apply(&job, Command::Retry, Uuid::nil(), &rules(), at(5)).unwrap()
    else {
        panic!("a retry of a failed job applies");
    };
    assert_eq!(status, JobStatus::Executing);
    assert_eq!(effects.dispatch[0].step, StepName::VirtioInjection);
    let job = after(&effects, &job.job_id);
    assert_eq!(job.failure, None, "the failure is cleared");
    assert_eq!(
        job.step(StepName::Snapshot).unwrap().attempt,
        1,
        "completed steps are not run again"
    );
}

#[test]
fn only_a_failed_job_can_be_retried() {
    let (job, _) = admitted(JobType::Test, SkipFlags::default());
    let refused = operator::apply(&job, Command::Retry, Uuid::nil(), &rules(), at(1));
    assert!(matches!(refused, Err(Refusal::Rule(_))), "{refused:?}");
}
