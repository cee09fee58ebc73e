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
    let (job, t) = JobState::new(JobType::Test, SkipFlags::default());
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
    let (mut job, _) = JobState::new(JobType::Test, SkipFlags::default());
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
    let (mut job, _) = JobState::new(JobType::Live, SkipFlags::default());
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
            let (mut job, t) = JobState::new(job_type, flags);
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
    let (mut job, t) = JobState::new(
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
    let (mut job, _) = JobState::new(JobType::Test, SkipFlags::default());
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

#[test]
fn every_step_failing_for_good_fails_the_job_with_its_code() {
    for job_type in [JobType::Test, JobType::Live] {
        for (index, failing) in job_type.pipeline().iter().enumerate() {
            let (mut job, _) = JobState::new(job_type, SkipFlags::default());
            for earlier in &job_type.pipeline()[..index] {
                claim_and_succeed(&mut job, *earlier);
            }
            step(
                &mut job,
                Event::Claimed {
                    step: *failing,
                    attempt: 1,
                },
            );
            let t = step(
                &mut job,
                Event::Failed {
                    step: *failing,
                    attempt: 1,
                    failure: failure(failing.error_code(), false),
                },
            );
            assert_eq!(t.job_status, JobStatus::Failed);
            assert!(t.dispatch.is_empty());
            let err = t.job_error.expect("job error");
            assert_eq!(err.step, *failing);
            assert_eq!(err.code, failing.error_code());
            assert_eq!(job.step(*failing).unwrap().status, StepStatus::Failed);
            for later in &job_type.pipeline()[index + 1..] {
                assert_eq!(job.step(*later).unwrap().status, StepStatus::Pending);
            }
            assert_eq!(job.current_step(), None);
        }
    }
}

#[test]
fn retryable_failures_retry_with_backoff_then_fail() {
    let (mut job, _) = JobState::new(JobType::Test, SkipFlags::default());
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
        delays.extend(t.dispatch.iter().map(|d| (d.attempt, d.delay)));
        if attempt < 3 {
            assert_eq!(t.job_status, JobStatus::Executing);
            let update = &t.step_updates[0];
            assert_eq!(update.status, StepStatus::Queued);
            assert!(update.message.as_deref().unwrap().contains("boom"));
        } else {
            assert_eq!(t.job_status, JobStatus::Failed);
            assert_eq!(t.job_error.unwrap().code, ErrorCode::SnapshotFailed);
        }
    }
    assert_eq!(
        delays,
        vec![(2, Duration::from_secs(2)), (3, Duration::from_secs(4))]
    );
}

#[test]
fn a_retry_that_succeeds_continues_the_pipeline() {
    let (mut job, _) = JobState::new(JobType::Live, SkipFlags::default());
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
    let (mut job, _) = JobState::new(JobType::Test, SkipFlags::default());
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
            delay: Duration::from_secs(2)
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
    let (mut job, _) = JobState::new(JobType::Test, SkipFlags::default());
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
    assert_eq!(job.status, JobStatus::Failed);
}

#[test]
fn duplicate_claims_and_unclaimed_reports_are_refused() {
    let (mut job, _) = JobState::new(JobType::Test, SkipFlags::default());
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
    let (mut job, _) = JobState::new(JobType::Test, SkipFlags::default());
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
        [("validation", "failed"), ("snapshot", "pending")]
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
