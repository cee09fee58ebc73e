//! Accepting work, read like the API reference: who may fail over, how many
//! operations a VM may have, where its networks land, the job ids, and the
//! cleanup of a test failover.

mod support;

use std::time::Duration;

use failover_core::admission::{self, AdmissionRefusal, CleanupTrigger};
use failover_core::effects::{AuditOperation, MetricEvent};
use failover_core::holds::Holder;
use failover_core::job::id_candidates;
use failover_core::pipeline::{JobType, SkipFlags, StepName};
use failover_core::{JobStatus, StepStatus};

use support::*;

fn holder(job_id: &str, job_type: JobType, status: JobStatus) -> Holder {
    Holder {
        job_id: job_id.into(),
        job_type,
        status,
        started: true,
    }
}

#[test]
fn an_accepted_test_failover_commits_the_job_its_steps_its_audit_row_and_its_first_dispatch() {
    let (job, effects) = admitted(JobType::Test, SkipFlags::default());
    assert_eq!(
        job.job_id,
        format!("enhanced-test-failover-{VM}-{}", at(0).timestamp())
    );
    assert_eq!(
        job.status,
        JobStatus::Pending,
        "pending until a worker claims"
    );
    assert_eq!(job.current_step, Some(StepName::Validation));
    assert_eq!(
        job.snapshot_name.as_deref(),
        Some(format!("test-420570c7-{}", at(0).timestamp()).as_str())
    );
    assert_eq!(
        effects.steps.len(),
        6,
        "every step of the pipeline is written"
    );
    assert_eq!(effects.dispatch.len(), 1);
    assert_eq!(effects.dispatch[0].step, StepName::Validation);
    assert_eq!(effects.dispatch[0].attempt, 1);
    let operations: Vec<String> = effects.audit.iter().map(|a| a.operation.name()).collect();
    assert_eq!(operations, ["failover.test", "step.validation"]);
    assert_eq!(
        effects.metrics,
        [MetricEvent::JobStarted {
            job_type: JobType::Test
        }]
    );
}

#[test]
fn a_vm_that_is_not_registered_or_not_replicated_is_not_found() {
    let req = request(JobType::Test);
    let candidates = id_candidates(JobType::Test, vm_id(), at(0));
    let missing = admission::admit(
        &req,
        &admission::AdmissionFacts {
            vm: None,
            holders: &[],
            taken_ids: &[],
            candidates: &candidates,
            now: at(0),
        },
        &rules(),
    );
    assert_eq!(
        missing.unwrap_err(),
        AdmissionRefusal::VmNotFound { vm_id: vm_id() }
    );
    let err = admit_with(&req, &registered("failed-over"), &[], &[], at(0)).unwrap_err();
    assert!(
        err.to_string().contains("register it again"),
        "a VM failed over live says how to fail it over again: {err}"
    );
}

#[test]
fn a_live_failover_is_refused_while_a_test_failover_of_the_vm_is_up() {
    let up = [holder("t-1", JobType::Test, JobStatus::Completed)];
    let err = admit_with(
        &request(JobType::Live),
        &registered("replicated"),
        &up,
        &[],
        at(0),
    )
    .unwrap_err();
    assert_eq!(
        err,
        AdmissionRefusal::TestFailoverUp {
            job_id: "t-1".into(),
            status: JobStatus::Completed
        }
    );
    assert!(err.to_string().contains("clean it up first"));
}

#[test]
fn at_most_five_unfinished_operations_per_vm_and_later_ones_wait_in_order() {
    let busy: Vec<Holder> = (0..4)
        .map(|n| holder(&format!("t-{n}"), JobType::Test, JobStatus::Executing))
        .collect();
    let fifth = admit_with(
        &request(JobType::Test),
        &registered("replicated"),
        &busy,
        &[],
        at(0),
    )
    .unwrap();
    assert_eq!(
        fifth.waiting_for.as_deref(),
        Some("t-3"),
        "waits behind the newest"
    );
    assert!(
        fifth.effects.dispatch.is_empty(),
        "a waiting job dispatches nothing"
    );
    assert_eq!(fifth.effects.new_jobs[0].record.status, JobStatus::Pending);

    let mut full = busy.clone();
    full.push(holder("t-4", JobType::Test, JobStatus::Pending));
    let sixth = admit_with(
        &request(JobType::Test),
        &registered("replicated"),
        &full,
        &[],
        at(0),
    )
    .unwrap_err();
    assert!(
        matches!(&sixth, AdmissionRefusal::TooManyOperations { count: 5, oldest, .. } if oldest == "t-0"),
        "{sixth:?}"
    );
}

#[test]
fn two_jobs_of_one_vm_in_one_second_take_consecutive_seconds() {
    let first = id_candidates(JobType::Test, vm_id(), at(0))[0].clone();
    let second = admit_with(
        &request(JobType::Test),
        &registered("replicated"),
        &[],
        std::slice::from_ref(&first),
        at(0),
    )
    .unwrap();
    assert_eq!(
        second.job_id,
        format!("enhanced-test-failover-{VM}-{}", at(1).timestamp())
    );
    assert_eq!(
        second.effects.new_jobs[0].record.snapshot_name.as_deref(),
        Some(format!("test-420570c7-{}", at(1).timestamp()).as_str()),
        "the snapshot is named after the id's second"
    );
}

#[test]
fn networks_map_from_the_request_then_the_vms_own_then_the_default() {
    let mut req = request(JobType::Test);
    req.network_mappings
        .insert("Backup".into(), "net-chosen".into());
    let test = admit_with(&req, &registered("replicated"), &[], &[], at(0)).unwrap();
    let mappings = &test.effects.new_jobs[0].record.context.network_mappings;
    assert_eq!(mappings["Backup"], "net-chosen", "the request wins");
    assert_eq!(
        mappings["VM Network"], "net-test",
        "then the configured default"
    );

    let live = admit_with(
        &request(JobType::Live),
        &registered("replicated"),
        &[],
        &[],
        at(0),
    )
    .unwrap();
    let mappings = &live.effects.new_jobs[0].record.context.network_mappings;
    assert_eq!(
        mappings["VM Network"], "net-prod",
        "the VM's own live network"
    );
    assert_eq!(mappings["Backup"], "net-live");
}

#[test]
fn skipped_steps_are_written_skipped_with_their_reason() {
    let (job, _) = admitted(
        JobType::Test,
        SkipFlags {
            skip_validation: true,
            skip_snapshot: true,
            skip_virtio_injection: false,
        },
    );
    for step in [StepName::Validation, StepName::Snapshot] {
        let record = job.step(step).unwrap();
        assert_eq!(record.status, StepStatus::Skipped, "{step}");
        assert!(record.message.as_deref().unwrap().contains("skip_"));
    }
    assert_eq!(job.current_step, Some(StepName::VirtioInjection));
    assert_eq!(job.snapshot_name, None, "no snapshot, no name");
}

#[test]
fn a_completed_test_failover_is_cleaned_up_once_by_a_job_linked_both_ways() {
    let (job, _) = admitted(JobType::Test, SkipFlags::default());
    let (done, _) = run_to_the_end(job, 1);
    assert_eq!(done.status, JobStatus::Completed);
    let candidates = id_candidates(JobType::Cleanup, vm_id(), at(100));
    let cleanup = admission::cleanup(
        &done,
        CleanupTrigger::Request,
        uuid::Uuid::from_u128(9),
        &candidates,
        &[],
        &rules(),
        at(100),
    )
    .unwrap();
    let new = &cleanup.effects.new_jobs[0].record;
    assert_eq!(new.job_type, JobType::Cleanup);
    assert_eq!(new.parent_job_id.as_deref(), Some(done.job_id.as_str()));
    assert_eq!(new.current_step, Some(StepName::TestVmShutdown));
    let linked = after(&cleanup.effects, &done.job_id);
    assert_eq!(
        linked.cleanup_job_id.as_deref(),
        Some(cleanup.job_id.as_str())
    );
    assert!(
        cleanup
            .effects
            .audit
            .iter()
            .any(|a| a.job_id == done.job_id && a.operation == AuditOperation::CleanupRequested),
        "the test job's trail records the request"
    );
    let again = admission::cleanup(
        &linked,
        CleanupTrigger::Request,
        uuid::Uuid::from_u128(10),
        &candidates,
        &[],
        &rules(),
        at(101),
    )
    .unwrap_err();
    assert!(again.to_string().contains("already has cleanup job"));
}

#[test]
fn only_a_test_failover_or_a_job_that_left_state_behind_is_cleaned_up() {
    let (live, _) = admitted(JobType::Live, SkipFlags::default());
    let (live_done, _) = run_to_the_end(live, 1);
    let candidates = id_candidates(JobType::Cleanup, vm_id(), at(100));
    let err = admission::cleanup(
        &live_done,
        CleanupTrigger::Request,
        uuid::Uuid::nil(),
        &candidates,
        &[],
        &rules(),
        at(100),
    )
    .unwrap_err();
    assert!(err.to_string().contains("permanent cut-over"), "{err}");

    let (running, _) = admitted(JobType::Test, SkipFlags::default());
    let err = admission::cleanup(
        &running,
        CleanupTrigger::Request,
        uuid::Uuid::nil(),
        &candidates,
        &[],
        &rules(),
        at(1),
    )
    .unwrap_err();
    assert!(err.to_string().contains("wait for it to finish"), "{err}");
}

#[test]
fn a_completed_test_failover_with_auto_cleanup_is_due_after_its_test_duration() {
    let mut req = request(JobType::Test);
    req.auto_cleanup = true;
    req.test_duration = Some(("30m".into(), Duration::from_secs(1800)));
    let admitted = admit_with(&req, &registered("replicated"), &[], &[], at(0)).unwrap();
    let job = admitted.effects.new_jobs[0].record.clone();
    let (done, _) = run_to_the_end(job, 1);
    let completed = done.completed_at.unwrap();
    assert_eq!(
        done.auto_cleanup_at,
        Some(completed + chrono::Duration::minutes(30))
    );

    let mut req = request(JobType::Test);
    req.auto_cleanup = true;
    let admitted = admit_with(&req, &registered("replicated"), &[], &[], at(0)).unwrap();
    let (done, _) = run_to_the_end(admitted.effects.new_jobs[0].record.clone(), 1);
    assert_eq!(
        done.auto_cleanup_at,
        Some(done.completed_at.unwrap() + chrono::Duration::hours(1)),
        "without a test_duration, the configured default"
    );
}
