//! The worker protocol, read like the API reference: a claim takes a lease
//! fenced by the attempt, only its holder renews or reports it, a lease that
//! runs out dispatches the step again, and a finished job releases its VM.

mod support;

use chrono::Duration;

use failover_core::coordination::{self, Report, StepOutcome};
use failover_core::effects::{Effects, MetricEvent, Redispatch};
use failover_core::holds::{self, Holder};
use failover_core::orchestration::StepFailure;
use failover_core::pipeline::{JobType, SkipFlags, StepName};
use failover_core::rules::Refusal;
use failover_core::{ErrorCode, JobStatus, StepStatus};

use support::*;

#[test]
fn a_claim_takes_the_lease_for_its_worker_and_the_job_starts() {
    let (job, _) = admitted(JobType::Test, SkipFlags::default());
    let effects = claim(&job, StepName::Validation, "w-1", at(1));
    let job = after(&effects, &job.job_id);
    let step = job.step(StepName::Validation).unwrap();
    assert_eq!(step.status, StepStatus::Running);
    assert_eq!(step.worker_id.as_deref(), Some("w-1"));
    assert_eq!(step.lease_expires_at, Some(at(1) + Duration::seconds(60)));
    assert_eq!(step.started_at, Some(at(1)));
    assert_eq!(job.status, JobStatus::Validating);
    assert_eq!(job.started_at, Some(at(1)));
    assert!(effects.dispatch.is_empty(), "a claim dispatches nothing");
}

#[test]
fn a_second_claim_of_the_same_attempt_is_refused() {
    let (job, _) = admitted(JobType::Test, SkipFlags::default());
    let job = after(
        &claim(&job, StepName::Validation, "w-1", at(1)),
        &job.job_id,
    );
    let again = coordination::claim(&job, StepName::Validation, 1, "w-2", &rules(), at(2));
    assert!(matches!(again, Err(Refusal::Rule(_))), "{again:?}");
}

#[test]
fn a_report_completes_the_step_and_dispatches_the_next_with_the_outputs() {
    let (job, _) = admitted(JobType::Test, SkipFlags::default());
    let job = after(
        &claim(&job, StepName::Validation, "w-1", at(1)),
        &job.job_id,
    );
    let outcome = StepOutcome::Succeeded {
        outputs: [("checked".to_owned(), "yes".to_owned())].into(),
        message: Some("all 7 checks passed".into()),
    };
    let effects = report(&job, StepName::Validation, "w-1", outcome, at(2));
    let job = after(&effects, &job.job_id);
    let done = job.step(StepName::Validation).unwrap();
    assert_eq!(done.status, StepStatus::Completed);
    assert_eq!(done.progress, 100);
    assert_eq!(done.completed_at, Some(at(2)));
    assert_eq!(done.message.as_deref(), Some("all 7 checks passed"));
    assert_eq!(job.outputs["checked"], "yes");
    assert_eq!(job.status, JobStatus::Executing);
    assert_eq!(effects.dispatch.len(), 1);
    assert_eq!(effects.dispatch[0].step, StepName::Snapshot);
}

#[test]
fn only_the_worker_holding_the_lease_may_report() {
    let (job, _) = admitted(JobType::Test, SkipFlags::default());
    let job = after(
        &claim(&job, StepName::Validation, "w-1", at(1)),
        &job.job_id,
    );
    let forged = coordination::report(
        &job,
        Report {
            step: StepName::Validation,
            attempt: 1,
            worker_id: "w-2".into(),
            outcome: succeeded(),
            log: None,
        },
        &rules(),
        at(2),
    );
    assert_eq!(
        forged.unwrap_err(),
        Refusal::LeasedToAnother {
            step: StepName::Validation,
            attempt: 1
        }
    );
}

#[test]
fn a_late_report_of_an_old_attempt_changes_nothing() {
    let (job, _) = admitted(JobType::Test, SkipFlags::default());
    let job = after(
        &claim(&job, StepName::Validation, "w-1", at(1)),
        &job.job_id,
    );
    let expired = coordination::expire_lease(&job, StepName::Validation, 1, &rules(), at(70))
        .expect("the lease ran out");
    let job = after(&expired, &job.job_id);
    assert_eq!(job.step(StepName::Validation).unwrap().attempt, 2);
    let late = coordination::report(
        &job,
        Report {
            step: StepName::Validation,
            attempt: 1,
            worker_id: "w-1".into(),
            outcome: succeeded(),
            log: None,
        },
        &rules(),
        at(71),
    );
    assert!(matches!(late, Err(Refusal::Rule(_))), "{late:?}");
}

#[test]
fn an_expired_lease_dispatches_a_new_attempt_at_once_and_is_counted() {
    let (job, _) = admitted(JobType::Test, SkipFlags::default());
    let job = after(
        &claim(&job, StepName::Validation, "w-1", at(1)),
        &job.job_id,
    );
    let effects = coordination::expire_lease(&job, StepName::Validation, 1, &rules(), at(62))
        .expect("the lease ran out at 61");
    assert_eq!(effects.dispatch.len(), 1);
    assert_eq!(effects.dispatch[0].attempt, 2);
    assert!(effects.dispatch[0].delay.is_zero());
    assert!(effects.metrics.contains(&MetricEvent::LeaseExpired {
        step: StepName::Validation
    }));
    assert!(effects.metrics.contains(&MetricEvent::StepRedispatched {
        step: StepName::Validation,
        cause: Redispatch::LeaseExpired
    }));
}

#[test]
fn a_lease_renewed_before_the_timer_acted_is_not_expired() {
    let (job, _) = admitted(JobType::Test, SkipFlags::default());
    let job = after(
        &claim(&job, StepName::Validation, "w-1", at(1)),
        &job.job_id,
    );
    let early = coordination::expire_lease(&job, StepName::Validation, 1, &rules(), at(30));
    assert_eq!(early.unwrap_err(), Refusal::LeaseRenewed);
}

#[test]
fn a_heartbeat_renews_the_lease_of_its_holder_and_progress_never_goes_back() {
    let (job, _) = admitted(JobType::Test, SkipFlags::default());
    let job = after(
        &claim(&job, StepName::Validation, "w-1", at(1)),
        &job.job_id,
    );
    let step = job.step(StepName::Validation).unwrap();
    let beat = coordination::heartbeat(
        &job.job_id,
        step,
        false,
        1,
        "w-1",
        40,
        Some("checking networks".into()),
        &rules(),
        at(10),
    );
    assert!(beat.held);
    let renewed = &beat.effects.steps[0].step;
    assert_eq!(
        renewed.lease_expires_at,
        Some(at(10) + Duration::seconds(60))
    );
    assert_eq!(renewed.progress, 40);
    assert_eq!(renewed.message.as_deref(), Some("checking networks"));
    let back = coordination::heartbeat(
        &job.job_id,
        renewed,
        true,
        1,
        "w-1",
        10,
        None,
        &rules(),
        at(15),
    );
    assert_eq!(back.effects.steps[0].step.progress, 40);
    assert!(back.cancel_requested, "the worker learns of a cancel");
    let other = coordination::heartbeat(
        &job.job_id,
        renewed,
        false,
        1,
        "w-2",
        50,
        None,
        &rules(),
        at(15),
    );
    assert!(!other.held);
    assert!(other.effects.is_empty(), "nothing written for a non-holder");
}

#[test]
fn a_retryable_failure_retries_with_backoff_then_fails_the_job_and_undoes_it() {
    let (job, _) = admitted(JobType::Test, SkipFlags::default());
    let mut job = job;
    for (attempt, t) in [(1u32, 1i64), (2, 10), (3, 20)] {
        job = after(
            &claim(&job, StepName::Validation, "w-1", at(t)),
            &job.job_id,
        );
        let failed = StepOutcome::Failed(StepFailure {
            code: ErrorCode::ValidationFailed,
            message: "CloudStack answered 530".into(),
            retryable: true,
        });
        let effects = report(&job, StepName::Validation, "w-1", failed, at(t + 1));
        job = after(&effects, &job.job_id);
        if attempt < 3 {
            assert_eq!(effects.dispatch[0].attempt, attempt + 1);
            assert!(!effects.dispatch[0].delay.is_zero(), "after a backoff");
        } else {
            assert!(effects.metrics.iter().any(|m| matches!(
                m,
                MetricEvent::JobFinished {
                    status: JobStatus::Failed,
                    error: Some(ErrorCode::ValidationFailed),
                    ..
                }
            )));
        }
    }
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(
        job.failure.as_ref().unwrap().code,
        ErrorCode::ValidationFailed
    );
    assert!(!job.holds_vm, "validation changed nothing: the VM is free");
}

#[test]
fn a_live_failover_that_completes_marks_its_vm_failed_over_and_frees_it() {
    let (job, _) = admitted(JobType::Live, SkipFlags::default());
    let (done, last) = run_to_the_end(job, 1);
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(last.vms_failed_over, [vm_id()]);
    assert_eq!(last.released_vms, [vm_id()]);
    assert!(!done.holds_vm);
}

#[test]
fn a_test_failover_holds_its_vm_until_its_cleanup_completes() {
    let (job, _) = admitted(JobType::Test, SkipFlags::default());
    let (done, last) = run_to_the_end(job, 1);
    assert!(done.holds_vm, "the test VM is up");
    assert!(last.released_vms.is_empty());

    let candidates = failover_core::job::id_candidates(JobType::Cleanup, vm_id(), at(100));
    let cleanup = failover_core::admission::cleanup(
        &done,
        failover_core::admission::CleanupTrigger::Request,
        uuid::Uuid::from_u128(3),
        &candidates,
        &[],
        &rules(),
        at(100),
    )
    .unwrap();
    let (finished, last) = run_to_the_end(cleanup.effects.new_jobs[0].record.clone(), 101);
    assert_eq!(finished.status, JobStatus::Completed);
    assert_eq!(last.released_jobs, std::slice::from_ref(&done.job_id));
    assert_eq!(last.released_vms, [vm_id()]);
    assert!(
        last.changed.contains(&done.job_id),
        "the test job's watchers are told"
    );
}

#[test]
fn the_oldest_job_waiting_for_a_released_vm_starts_next() {
    let holders = [
        Holder {
            job_id: "live-1".into(),
            job_type: JobType::Live,
            status: JobStatus::Executing,
            started: true,
        },
        Holder {
            job_id: "test-2".into(),
            job_type: JobType::Test,
            status: JobStatus::Pending,
            started: false,
        },
    ];
    let (job, _) = admitted(JobType::Live, SkipFlags::default());
    let (mut done, mut last) = run_to_the_end(job, 1);
    // The job that released the VM is the first holder.
    done.job_id = "live-1".into();
    last.jobs = vec![done];
    assert_eq!(
        holds::next_to_start(&holders, &last).as_deref(),
        Some("test-2")
    );
    assert_eq!(holds::next_to_start(&holders, &Effects::default()), None);
}
