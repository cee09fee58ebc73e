//! A site of the rules' tests: a registered VM, the configured rules, a
//! clock, and helpers that drive a job the way the gateway does (decide,
//! then take the decision's record as the job's new state).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use failover_core::admission::{self, AdmissionFacts, Admitted, FailoverRequest, RegisteredVm};
use failover_core::coordination::{self, Report, StepOutcome};
use failover_core::effects::Effects;
use failover_core::holds::Holder;
use failover_core::inventory::{Disk, Nic, OsFamily, VmRegistration};
use failover_core::job::{JobRecord, Placement, id_candidates};
use failover_core::orchestration::RetryPolicy;
use failover_core::pipeline::{JobType, SkipFlags, StepName};
use failover_core::rules::Rules;

pub const VM: &str = "420570c7-f61f-a930-77c5-1e876786cb3c";

pub fn vm_id() -> Uuid {
    Uuid::parse_str(VM).unwrap()
}

pub fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_756_882_765 + seconds, 0).unwrap()
}

pub fn rules() -> Rules {
    Rules {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(5),
        },
        lease: Duration::from_secs(60),
        default_test_duration: Duration::from_secs(3600),
        max_operations_per_vm: 5,
        placement: Placement {
            zone_id: "zone-1".into(),
            template_id: "template-1".into(),
            appliance_vm_id: "appliance-1".into(),
        },
        default_test_network_id: Some("net-test".into()),
        default_live_network_id: Some("net-live".into()),
    }
}

pub fn registered(state: &str) -> RegisteredVm {
    RegisteredVm {
        vm_id: vm_id(),
        spec: VmRegistration {
            vm_name: "pgtest1".into(),
            os_family: OsFamily::Linux,
            cpu_count: 2,
            memory_mb: 4096,
            replication_state: state.into(),
            disks: vec![Disk {
                disk_id: "disk-0".into(),
                cloudstack_volume_id: "vol-1".into(),
                linstor_resource: "pvc-1".into(),
                device_path: "/dev/drbd1000".into(),
                boot: true,
            }],
            nics: vec![
                Nic {
                    source_network: "VM Network".into(),
                    test_network_id: None,
                    live_network_id: Some("net-prod".into()),
                },
                Nic {
                    source_network: "Backup".into(),
                    test_network_id: Some("net-backup-test".into()),
                    live_network_id: None,
                },
            ],
        },
    }
}

pub fn request(job_type: JobType) -> FailoverRequest {
    FailoverRequest {
        job_type,
        vm_id: vm_id(),
        vm_name: "pgtest1".into(),
        skips: SkipFlags::default(),
        auto_cleanup: false,
        test_duration: None,
        rollback_on_failure: true,
        network_mappings: BTreeMap::new(),
        custom_config: None,
        notification_config: None,
        correlation_id: Uuid::from_u128(7),
    }
}

/// Admits `req` at `now` with `holders` holding the VM and `taken` ids.
pub fn admit_with(
    req: &FailoverRequest,
    vm: &RegisteredVm,
    holders: &[Holder],
    taken: &[String],
    now: DateTime<Utc>,
) -> Result<Admitted, admission::AdmissionRefusal> {
    let candidates = id_candidates(req.job_type, req.vm_id, now);
    admission::admit(
        req,
        &AdmissionFacts {
            vm: Some(vm),
            holders,
            taken_ids: taken,
            candidates: &candidates,
            now,
        },
        &rules(),
    )
}

/// A job admitted at `at(0)` on a free VM, as the gateway writes it.
pub fn admitted(job_type: JobType, skips: SkipFlags) -> (JobRecord, Effects) {
    let mut req = request(job_type);
    req.skips = skips;
    let admitted = admit_with(&req, &registered("replicated"), &[], &[], at(0)).unwrap();
    let job = admitted.effects.new_jobs[0].record.clone();
    (job, admitted.effects)
}

/// The job as `effects` leave it.
pub fn after(effects: &Effects, job_id: &str) -> JobRecord {
    effects
        .job(job_id)
        .expect("the effects write the job")
        .clone()
}

pub fn claim(job: &JobRecord, step: StepName, worker: &str, now: DateTime<Utc>) -> Effects {
    let attempt = job.step(step).unwrap().attempt;
    coordination::claim(job, step, attempt, worker, &rules(), now)
        .unwrap_or_else(|r| panic!("claim of {step} refused: {r}"))
}

pub fn report(
    job: &JobRecord,
    step: StepName,
    worker: &str,
    outcome: StepOutcome,
    now: DateTime<Utc>,
) -> Effects {
    let attempt = job.step(step).unwrap().attempt;
    coordination::report(
        job,
        Report {
            step,
            attempt,
            worker_id: worker.into(),
            outcome,
            log: None,
        },
        &rules(),
        now,
    )
    .unwrap_or_else(|r| panic!("report of {step} refused: {r}"))
}

pub fn succeeded() -> StepOutcome {
    StepOutcome::Succeeded {
        outputs: BTreeMap::new(),
        message: None,
    }
}

/// Runs every step of `job` to success, from `start` on, a second a step.
pub fn run_to_the_end(mut job: JobRecord, start: i64) -> (JobRecord, Effects) {
    let mut t = start;
    let mut last = Effects::default();
    while let Some(step) = job.current_step {
        job = after(&claim(&job, step, "w-1", at(t)), &job.job_id.clone());
        last = report(&job, step, "w-1", succeeded(), at(t + 1));
        job = after(&last, &job.job_id.clone());
        t += 2;
    }
    (job, last)
}
