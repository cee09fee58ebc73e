//! The rules, read like the API reference: pipelines, skips, retries and
//! every failure point, with no database or broker.

use super::*;

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_secs(2),
        max_backoff: Duration::from_secs(5),
    }
}

/// Applies `event` and absorbs the result, panicking on a refusal.
fn step(job: &mut JobState, event: Event) -> Transition {
    let t = apply(job, &event, &policy()).unwrap_or_else(|r| panic!("{event:?} refused: {r}"));
    job.absorb(&t);
    t
}

/// A job that was accepted and started (its VM was free).
fn started(job_type: JobType, skips: SkipFlags) -> (JobState, Transition) {
    let (mut job, _) = JobState::new(job_type, skips, true);
    let t = apply(&job, &Event::Start, &policy()).expect("start");
    job.absorb(&t);
    (job, t)
}

fn claim_and_succeed(job: &mut JobState, name: StepName) -> Transition {
    let attempt = job.step(name).unwrap().attempt;
    step(
        job,
        Event::Claimed {
            step: name,
            attempt,
        },
    );
    step(
        job,
        Event::Succeeded {
            step: name,
            attempt,
        },
    )
}

fn statuses(job: &JobState) -> Vec<(&'static str, &'static str)> {
    job.steps
        .iter()
        .map(|s| (s.name.as_str(), s.status.as_str()))
        .collect()
}

fn failure(code: ErrorCode, retryable: bool) -> StepFailure {
    StepFailure {
        code,
        message: "boom".into(),
        retryable,
    }
}

#[test]
fn a_new_job_is_pending_with_validation_queued() {
    let (job, t) = started(JobType::Test, SkipFlags::default());
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(t.job_status, JobStatus::Pending);
    assert_eq!(
        t.dispatch,
        vec![Dispatch {
            step: StepName::Validation,
            attempt: 1,
            delay: Duration::ZERO
        }]
    );
    assert_eq!(job.current_step(), Some(StepName::Validation));
    assert_eq!(
        job.step(StepName::Snapshot).unwrap().status,
        StepStatus::Pending
    );
}

#[test]
fn test_failover_runs_every_step_in_order_to_completion() {
    let (mut job, _) = started(JobType::Test, SkipFlags::default());
    let t = step(
        &mut job,
        Event::Claimed {
            step: StepName::Validation,
            attempt: 1,
        },
    );
    assert_eq!(t.job_status, JobStatus::Validating);
    let t = step(
        &mut job,
        Event::Succeeded {
            step: StepName::Validation,
            attempt: 1,
        },
    );
    assert_eq!(t.dispatch[0].step, StepName::Snapshot);
    assert_eq!(t.job_status, JobStatus::Executing);
    for name in &JobType::Test.pipeline()[1..] {
        let t = claim_and_succeed(&mut job, *name);
        assert!(t.job_error.is_none());
    }
    assert_eq!(job.status, JobStatus::Completed);
    assert!(job.steps.iter().all(|s| s.status == StepStatus::Completed));
    assert_eq!(job.current_step(), None);
}

#[test]
fn live_failover_runs_its_own_pipeline() {
    let (mut job, _) = started(JobType::Live, SkipFlags::default());
    let mut dispatched = vec![StepName::Validation];
    for name in JobType::Live.pipeline() {
        let t = claim_and_succeed(&mut job, *name);
        dispatched.extend(t.dispatch.iter().map(|d| d.step));
    }
    assert_eq!(dispatched, JobType::Live.pipeline());
    assert_eq!(job.status, JobStatus::Completed);
}

#[test]
fn each_skip_flag_skips_exactly_its_step() {
    let cases = [
        (
            SkipFlags {
                skip_validation: true,
                ..Default::default()
            },
            StepName::Validation,
        ),
        (
            SkipFlags {
                skip_snapshot: true,
                ..Default::default()
            },
            StepName::Snapshot,
        ),
        (
            SkipFlags {
                skip_virtio_injection: true,
                ..Default::default()
            },
            StepName::VirtioInjection,
        ),
    ];
    for job_type in [JobType::Test, JobType::Live] {
        for (flags, skipped) in cases {
            let (mut job, t) = JobState::new(job_type, flags, true);
            let started_t = apply(&job, &Event::Start, &policy()).unwrap();
            job.absorb(&started_t);
            let skip = t
                .step_updates
                .iter()
                .find(|u| u.step == skipped)
                .expect("skip recorded");
            assert_eq!(skip.status, StepStatus::Skipped);
            assert!(skip.message.as_deref().unwrap().contains("skip_"));
            let mut ran = Vec::new();
            while let Some(current) = job.current_step() {
                ran.push(current);
                claim_and_succeed(&mut job, current);
            }
            let expected: Vec<_> = job_type
                .pipeline()
                .iter()
                .copied()
                .filter(|s| *s != skipped)
                .collect();
            assert_eq!(ran, expected, "{job_type} {flags:?}");
            assert_eq!(job.step(skipped).unwrap().status, StepStatus::Skipped);
            assert_eq!(job.status, JobStatus::Completed);
        }
    }
}

#[test]
fn skipping_validation_goes_straight_to_executing() {
    let (mut job, t) = started(
        JobType::Test,
        SkipFlags {
            skip_validation: true,
            skip_snapshot: true,
            skip_virtio_injection: true,
        },
    );
    assert_eq!(t.dispatch[0].step, StepName::TestVmCreation);
    let t = step(
        &mut job,
        Event::Claimed {
            step: StepName::TestVmCreation,
            attempt: 1,
        },
    );
    assert_eq!(t.job_status, JobStatus::Executing);
}

#[test]
fn a_worker_skip_moves_on_with_its_reason() {
    let (mut job, _) = started(JobType::Test, SkipFlags::default());
    claim_and_succeed(&mut job, StepName::Validation);
    claim_and_succeed(&mut job, StepName::Snapshot);
    step(
        &mut job,
        Event::Claimed {
            step: StepName::VirtioInjection,
            attempt: 1,
        },
    );
    let t = step(
        &mut job,
        Event::Skipped {
            step: StepName::VirtioInjection,
            attempt: 1,
            reason: "linux guest".into(),
        },
    );
    assert_eq!(t.step_updates[0].message.as_deref(), Some("linux guest"));
    assert_eq!(t.dispatch[0].step, StepName::TestVmCreation);
}

/// Runs `job_type` to `failing` and fails it for good; returns the transition.
fn fail_at(job_type: JobType, failing: StepName, rollback: bool) -> (JobState, Transition) {
    let (mut job, _) = JobState::new(job_type, SkipFlags::default(), rollback);
    let t = apply(&job, &Event::Start, &policy()).unwrap();
    job.absorb(&t);
    while job.current_step() != Some(failing) {
        let current = job
            .current_step()
            .expect("pipeline reaches the failing step");
        claim_and_succeed(&mut job, current);
    }
    step(
        &mut job,
        Event::Claimed {
            step: failing,
            attempt: 1,
        },
    );
    let t = step(
        &mut job,
        Event::Failed {
            step: failing,
            attempt: 1,
            failure: failure(failing.error_code(), false),
        },
    );
    (job, t)
}

/// Claims and completes every compensation step in turn.
fn run_compensation(job: &mut JobState) -> Vec<StepName> {
    let mut ran = Vec::new();
    while let Some(current) = job.current_step() {
        assert!(current.is_compensation(), "{current} is not an undo step");
        ran.push(current);
        claim_and_succeed(job, current);
    }
    ran
}

#[test]
fn every_step_failing_for_good_fails_the_job_with_its_code_and_undoes_it() {
    use StepName::*;
    let expected_undo: [(JobType, StepName, Vec<StepName>); 12] = [
        (JobType::Test, Validation, vec![]),
        (JobType::Test, Snapshot, vec![CompensationSnapshotDeletion]),
        (
            JobType::Test,
            VirtioInjection,
            vec![CompensationSnapshotRollback, CompensationSnapshotDeletion],
        ),
        (
            JobType::Test,
            TestVmCreation,
            vec![
                CompensationVmShutdown,
                CompensationSnapshotRollback,
                CompensationVmDestruction,
                CompensationSnapshotDeletion,
            ],
        ),
        (
            JobType::Test,
            VolumeAttachment,
            vec![
                CompensationVmShutdown,
                CompensationVolumeDetachment,
                CompensationSnapshotRollback,
                CompensationVolumeReattachment,
                CompensationVmDestruction,
                CompensationSnapshotDeletion,
            ],
        ),
        (
            JobType::Test,
            TestVmStartup,
            vec![
                CompensationVmShutdown,
                CompensationVolumeDetachment,
                CompensationSnapshotRollback,
                CompensationVolumeReattachment,
                CompensationVmDestruction,
                CompensationSnapshotDeletion,
            ],
        ),
        (JobType::Live, Validation, vec![]),
        (JobType::Live, Snapshot, vec![CompensationSnapshotDeletion]),
        (
            JobType::Live,
            VirtioInjection,
            vec![CompensationSnapshotRollback, CompensationSnapshotDeletion],
        ),
        (
            JobType::Live,
            VmCreation,
            vec![
                CompensationVmShutdown,
                CompensationSnapshotRollback,
                CompensationVmDestruction,
                CompensationSnapshotDeletion,
            ],
        ),
        (
            JobType::Live,
            VolumeSwitch,
            vec![
                CompensationVmShutdown,
                CompensationVolumeDetachment,
                CompensationSnapshotRollback,
                CompensationVolumeReattachment,
                CompensationVmDestruction,
                CompensationSnapshotDeletion,
            ],
        ),
        (
            JobType::Live,
            VmStartup,
            vec![
                CompensationVmShutdown,
                CompensationVolumeDetachment,
                CompensationSnapshotRollback,
                CompensationVolumeReattachment,
                CompensationVmDestruction,
                CompensationSnapshotDeletion,
            ],
        ),
    ];
    for (job_type, failing, undo) in expected_undo {
        let (mut job, t) = fail_at(job_type, failing, true);
        let err = t.job_error.clone().expect("job error");
        assert_eq!((err.step, err.code), (failing, failing.error_code()));
        assert_eq!(t.added_steps, undo, "{job_type} failing at {failing}");
        assert_eq!(job.step(failing).unwrap().status, StepStatus::Failed);
        let index = job_type
            .pipeline()
            .iter()
            .position(|s| *s == failing)
            .unwrap();
        for later in &job_type.pipeline()[index + 1..] {
            assert_eq!(job.step(*later).unwrap().status, StepStatus::Cancelled);
        }
        if undo.is_empty() {
            assert_eq!(t.job_status, JobStatus::Failed);
            assert!(t.dispatch.is_empty());
        } else {
            assert_eq!(t.job_status, JobStatus::Compensating);
            assert_eq!(t.dispatch[0].step, undo[0]);
        }
        assert_eq!(run_compensation(&mut job), undo);
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.failure.as_ref().unwrap().code, failing.error_code());
        assert!(!job.holds_vm(), "a fully undone job releases its VM");
    }
}

#[test]
fn a_job_that_keeps_its_state_fails_at_once_and_holds_its_vm() {
    let (job, t) = fail_at(JobType::Test, StepName::VolumeAttachment, false);
    assert_eq!(t.job_status, JobStatus::Failed);
    assert!(t.added_steps.is_empty());
    assert!(t.dispatch.is_empty());
    assert_eq!(t.job_error.unwrap().code, ErrorCode::VolumeAttachFailed);
    assert!(job.holds_vm());
    let (job, _) = fail_at(JobType::Test, StepName::Validation, false);
    assert!(!job.holds_vm(), "nothing acted before validation failed");
}

#[test]
fn a_retry_resumes_from_the_failed_step_without_redoing_earlier_ones() {
    let (mut job, _) = fail_at(JobType::Live, StepName::VolumeSwitch, false);
    let t = step(&mut job, Event::RetryRequested);
    assert!(t.clear_error);
    assert_eq!(
        t.dispatch,
        vec![Dispatch {
            step: StepName::VolumeSwitch,
            attempt: 2,
            delay: Duration::ZERO
        }]
    );
    assert_eq!(t.job_status, JobStatus::Executing);
    assert_eq!(
        job.step(StepName::VmStartup).unwrap().status,
        StepStatus::Pending
    );
    let mut ran = Vec::new();
    while let Some(current) = job.current_step() {
        ran.push(current);
        claim_and_succeed(&mut job, current);
    }
    assert_eq!(ran, [StepName::VolumeSwitch, StepName::VmStartup]);
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.step(StepName::Validation).unwrap().attempt, 1);
}

#[test]
fn only_failed_jobs_can_be_retried() {
    let (mut job, _) = started(JobType::Test, SkipFlags::default());
    assert_eq!(
        apply(&job, &Event::RetryRequested, &policy()),
        Err(Refusal::NotRetryable(JobStatus::Pending))
    );
    while let Some(current) = job.current_step() {
        claim_and_succeed(&mut job, current);
    }
    assert_eq!(
        apply(&job, &Event::RetryRequested, &policy()),
        Err(Refusal::NotRetryable(JobStatus::Completed))
    );
    let (mut undone, _) = fail_at(JobType::Test, StepName::TestVmStartup, true);
    run_compensation(&mut undone);
    assert_eq!(
        apply(&undone, &Event::RetryRequested, &policy()),
        Err(Refusal::Compensated)
    );
}

#[test]
fn a_failed_undo_step_does_not_stop_the_others_and_can_be_retried() {
    let (mut job, _) = fail_at(JobType::Test, StepName::TestVmStartup, true);
    claim_and_succeed(&mut job, StepName::CompensationVmShutdown);
    step(
        &mut job,
        Event::Claimed {
            step: StepName::CompensationVolumeDetachment,
            attempt: 1,
        },
    );
    let t = step(
        &mut job,
        Event::Failed {
            step: StepName::CompensationVolumeDetachment,
            attempt: 1,
            failure: failure(ErrorCode::CleanupFailed, false),
        },
    );
    assert_eq!(t.dispatch[0].step, StepName::CompensationSnapshotRollback);
    assert!(
        t.job_error.is_none(),
        "the original failure stays the job's error"
    );
    let rest = run_compensation(&mut job);
    assert_eq!(rest.len(), 4);
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.failure.as_ref().unwrap().code, ErrorCode::VmStartFailed);
    assert!(job.holds_vm(), "something was left behind");
    // Retrying runs the failed undo step again.
    let t = step(&mut job, Event::RetryRequested);
    assert!(!t.clear_error);
    assert_eq!(t.job_status, JobStatus::Compensating);
    assert_eq!(t.dispatch[0].step, StepName::CompensationVolumeDetachment);
    assert_eq!(t.dispatch[0].attempt, 2);
    assert_eq!(
        run_compensation(&mut job),
        [StepName::CompensationVolumeDetachment]
    );
    assert_eq!(job.status, JobStatus::Failed);
    assert!(!job.holds_vm());
}

#[test]
fn cancelling_a_running_step_waits_for_the_worker_then_undoes() {
    let (mut job, _) = started(JobType::Test, SkipFlags::default());
    for s in [StepName::Validation, StepName::Snapshot] {
        claim_and_succeed(&mut job, s);
    }
    step(
        &mut job,
        Event::Claimed {
            step: StepName::VirtioInjection,
            attempt: 1,
        },
    );
    let t = step(&mut job, Event::CancelRequested);
    assert_eq!(t.job_status, JobStatus::Cancelling);
    assert!(t.cancel_requested);
    assert!(t.dispatch.is_empty());
    assert_eq!(
        apply(&job, &Event::CancelRequested, &policy()),
        Err(Refusal::AlreadyCancelling)
    );
    // The worker killed virt-customize and reports a (retryable) failure:
    // no retry, the undo starts.
    let t = step(
        &mut job,
        Event::Failed {
            step: StepName::VirtioInjection,
            attempt: 1,
            failure: failure(ErrorCode::VirtioFailed, true),
        },
    );
    assert!(t.job_error.is_none());
    assert_eq!(
        t.added_steps,
        [
            StepName::CompensationSnapshotRollback,
            StepName::CompensationSnapshotDeletion
        ]
    );
    assert_eq!(t.job_status, JobStatus::Cancelling);
    assert_eq!(
        job.step(StepName::TestVmCreation).unwrap().status,
        StepStatus::Cancelled
    );
    run_compensation(&mut job);
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(!job.holds_vm());
    assert_eq!(
        apply(&job, &Event::CancelRequested, &policy()),
        Err(Refusal::JobFinished(JobStatus::Cancelled))
    );
}

#[test]
fn a_cancel_whose_worker_never_answers_ends_by_lease_expiry() {
    let (mut job, _) = started(JobType::Live, SkipFlags::default());
    claim_and_succeed(&mut job, StepName::Validation);
    step(
        &mut job,
        Event::Claimed {
            step: StepName::Snapshot,
            attempt: 1,
        },
    );
    step(&mut job, Event::CancelRequested);
    let t = step(
        &mut job,
        Event::LeaseExpired {
            step: StepName::Snapshot,
            attempt: 1,
        },
    );
    assert_eq!(t.added_steps, [StepName::CompensationSnapshotDeletion]);
    run_compensation(&mut job);
    assert_eq!(job.status, JobStatus::Cancelled);
}

#[test]
fn cancelling_before_any_step_ran_ends_at_once() {
    let (job, _) = JobState::new(JobType::Test, SkipFlags::default(), true);
    let t = apply(&job, &Event::CancelRequested, &policy()).unwrap();
    assert_eq!(t.job_status, JobStatus::Cancelled);
    assert!(t.added_steps.is_empty());
    assert!(
        t.step_updates
            .iter()
            .all(|u| u.status == StepStatus::Cancelled)
    );
    // Queued but not claimed: the message in flight will be refused.
    let (mut job, _) = started(JobType::Test, SkipFlags::default());
    let t = step(&mut job, Event::CancelRequested);
    assert_eq!(t.job_status, JobStatus::Cancelled);
    assert!(matches!(
        apply(
            &job,
            &Event::Claimed {
                step: StepName::Validation,
                attempt: 1
            },
            &policy()
        ),
        Err(Refusal::JobFinished(JobStatus::Cancelled))
    ));
}

#[test]
fn a_cleanup_job_runs_its_pipeline_and_skips_snapshot_steps_without_a_snapshot() {
    let (mut job, _) = started(JobType::Cleanup, SkipFlags::default());
    let mut ran = Vec::new();
    while let Some(current) = job.current_step() {
        ran.push(current);
        claim_and_succeed(&mut job, current);
    }
    assert_eq!(ran, JobType::Cleanup.pipeline());
    assert_eq!(job.status, JobStatus::Completed);
    assert!(!job.holds_vm());

    let (mut job, t) = JobState::new(
        JobType::Cleanup,
        SkipFlags {
            skip_snapshot: true,
            ..Default::default()
        },
        true,
    );
    assert!(!job.rollback_on_failure, "a cleanup never compensates");
    let skipped: Vec<_> = t.step_updates.iter().map(|u| u.step).collect();
    assert_eq!(
        skipped,
        [StepName::SnapshotRollback, StepName::SnapshotDeletion]
    );
    let t = apply(&job, &Event::Start, &policy()).unwrap();
    job.absorb(&t);
    let mut ran = Vec::new();
    while let Some(current) = job.current_step() {
        ran.push(current);
        claim_and_succeed(&mut job, current);
    }
    assert_eq!(ran.len(), 4);
}

#[test]
fn a_failed_cleanup_keeps_its_state_and_retries_from_the_failed_step() {
    let (job, t) = fail_at(JobType::Cleanup, StepName::SnapshotRollback, true);
    assert_eq!(t.job_status, JobStatus::Failed);
    assert_eq!(t.job_error.unwrap().code, ErrorCode::CleanupFailed);
    assert!(t.added_steps.is_empty());
    let mut job = job;
    let t = step(&mut job, Event::RetryRequested);
    assert_eq!(t.dispatch[0].step, StepName::SnapshotRollback);
    let mut ran = Vec::new();
    while let Some(current) = job.current_step() {
        ran.push(current);
        claim_and_succeed(&mut job, current);
    }
    assert_eq!(
        ran,
        [
            StepName::SnapshotRollback,
            StepName::VolumeReattachment,
            StepName::TestVmDestruction,
            StepName::SnapshotDeletion
        ]
    );
}

#[test]
fn a_completed_test_failover_holds_its_vm_a_live_one_does_not() {
    for (job_type, holds) in [(JobType::Test, true), (JobType::Live, false)] {
        let (mut job, _) = started(job_type, SkipFlags::default());
        while let Some(current) = job.current_step() {
            claim_and_succeed(&mut job, current);
        }
        assert_eq!(job.holds_vm(), holds, "{job_type}");
    }
}

#[test]
fn start_happens_once() {
    let (job, _) = started(JobType::Test, SkipFlags::default());
    assert_eq!(
        apply(&job, &Event::Start, &policy()),
        Err(Refusal::AlreadyStarted)
    );
}

#[test]
fn retryable_failures_retry_with_backoff_then_fail() {
    let (mut job, _) = started(JobType::Test, SkipFlags::default());
    claim_and_succeed(&mut job, StepName::Validation);
    let mut delays = Vec::new();
    for attempt in 1..=3 {
        step(
            &mut job,
            Event::Claimed {
                step: StepName::Snapshot,
                attempt,
            },
        );
        let t = step(
            &mut job,
            Event::Failed {
                step: StepName::Snapshot,
                attempt,
                failure: failure(ErrorCode::SnapshotFailed, true),
            },
        );
        delays.extend(
            t.dispatch
                .iter()
                .filter(|d| d.step == StepName::Snapshot)
                .map(|d| (d.attempt, d.delay)),
        );
        if attempt < 3 {
            assert_eq!(t.job_status, JobStatus::Executing);
            let update = &t.step_updates[0];
            assert_eq!(update.status, StepStatus::Queued);
            assert!(update.message.as_deref().unwrap().contains("boom"));
        } else {
            assert_eq!(t.job_status, JobStatus::Compensating);
            assert_eq!(t.job_error.unwrap().code, ErrorCode::SnapshotFailed);
            assert_eq!(t.added_steps, [StepName::CompensationSnapshotDeletion]);
        }
    }
    assert_eq!(
        delays,
        vec![(2, Duration::from_secs(2)), (3, Duration::from_secs(4))]
    );
}

#[test]
fn a_retry_that_succeeds_continues_the_pipeline() {
    let (mut job, _) = started(JobType::Live, SkipFlags::default());
    step(
        &mut job,
        Event::Claimed {
            step: StepName::Validation,
            attempt: 1,
        },
    );
    step(
        &mut job,
        Event::Failed {
            step: StepName::Validation,
            attempt: 1,
            failure: failure(ErrorCode::ValidationFailed, true),
        },
    );
    let t = claim_and_succeed(&mut job, StepName::Validation);
    assert_eq!(t.dispatch[0].step, StepName::Snapshot);
    assert_eq!(job.step(StepName::Validation).unwrap().attempt, 2);
}

#[test]
fn an_expired_lease_redispatches_a_new_attempt_at_once() {
    let (mut job, _) = started(JobType::Test, SkipFlags::default());
    step(
        &mut job,
        Event::Claimed {
            step: StepName::Validation,
            attempt: 1,
        },
    );
    let t = step(
        &mut job,
        Event::LeaseExpired {
            step: StepName::Validation,
            attempt: 1,
        },
    );
    assert_eq!(
        t.dispatch,
        vec![Dispatch {
            step: StepName::Validation,
            attempt: 2,
            delay: Duration::ZERO
        }]
    );
    // The zombie's late report for attempt 1 is refused.
    let zombie = apply(
        &job,
        &Event::Succeeded {
            step: StepName::Validation,
            attempt: 1,
        },
        &policy(),
    );
    assert_eq!(
        zombie,
        Err(Refusal::StaleAttempt {
            step: StepName::Validation,
            current: 2,
            got: 1
        })
    );
}

#[test]
fn leases_expiring_on_every_attempt_fail_the_job_with_the_step_code() {
    let (mut job, _) = started(JobType::Test, SkipFlags::default());
    claim_and_succeed(&mut job, StepName::Validation);
    claim_and_succeed(&mut job, StepName::Snapshot);
    claim_and_succeed(&mut job, StepName::VirtioInjection);
    let mut last = None;
    for attempt in 1..=3 {
        step(
            &mut job,
            Event::Claimed {
                step: StepName::TestVmCreation,
                attempt,
            },
        );
        last = Some(step(
            &mut job,
            Event::LeaseExpired {
                step: StepName::TestVmCreation,
                attempt,
            },
        ));
    }
    let err = last.unwrap().job_error.unwrap();
    assert_eq!(err.code, ErrorCode::VmCreateFailed);
    assert!(err.message.contains("lease"));
    // The VM the attempts may have made is undone.
    assert_eq!(job.status, JobStatus::Compensating);
    assert_eq!(job.current_step(), Some(StepName::CompensationVmShutdown));
    run_compensation(&mut job);
    assert_eq!(job.status, JobStatus::Failed);
}

#[test]
fn duplicate_claims_and_unclaimed_reports_are_refused() {
    let (mut job, _) = started(JobType::Test, SkipFlags::default());
    let claim = Event::Claimed {
        step: StepName::Validation,
        attempt: 1,
    };
    step(&mut job, claim.clone());
    assert!(matches!(
        apply(&job, &claim, &policy()),
        Err(Refusal::WrongStepStatus {
            status: StepStatus::Running,
            ..
        })
    ));
    // A report for a step that was never claimed.
    assert!(matches!(
        apply(
            &job,
            &Event::Succeeded {
                step: StepName::Snapshot,
                attempt: 0
            },
            &policy()
        ),
        Err(Refusal::WrongStepStatus { .. })
    ));
    // A step of the other pipeline.
    assert_eq!(
        apply(
            &job,
            &Event::Claimed {
                step: StepName::VmCreation,
                attempt: 1
            },
            &policy()
        ),
        Err(Refusal::UnknownStep(StepName::VmCreation))
    );
}

#[test]
fn a_finished_job_refuses_every_event() {
    let (mut job, _) = started(JobType::Test, SkipFlags::default());
    step(
        &mut job,
        Event::Claimed {
            step: StepName::Validation,
            attempt: 1,
        },
    );
    step(
        &mut job,
        Event::Failed {
            step: StepName::Validation,
            attempt: 1,
            failure: failure(ErrorCode::ValidationFailed, false),
        },
    );
    assert_eq!(
        apply(
            &job,
            &Event::LeaseExpired {
                step: StepName::Validation,
                attempt: 1
            },
            &policy()
        ),
        Err(Refusal::JobFinished(JobStatus::Failed))
    );
    assert_eq!(
        statuses(&job)[..2],
        [("validation", "failed"), ("snapshot", "cancelled")]
    );
}

#[test]
fn backoff_doubles_and_is_capped() {
    let p = policy();
    assert_eq!(p.backoff(1), Duration::from_secs(2));
    assert_eq!(p.backoff(2), Duration::from_secs(4));
    assert_eq!(p.backoff(3), Duration::from_secs(5));
    assert_eq!(p.backoff(40), Duration::from_secs(5));
}
