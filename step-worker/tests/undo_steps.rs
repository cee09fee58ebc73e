//! The undo executors (cleanup and compensation steps) against the
//! in-process CloudStack and LINSTOR simulators: a forward failover run by
//! the real executors, then undone, must leave both systems as they were
//! before it; every undo step is harmless when repeated; the destruction
//! never takes a replicated volume with it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use failover_core::ErrorCode;
use failover_core::pipeline::StepName;
use failover_platform::Settings;
use failover_proto::v1 as pb;
use simulators::cloudstack::{
    self as cs_sim, CloudStackSim, CloudStackSimConfig, DEMO_APPLIANCE_VM_ID,
    DEMO_PG_BOOT_VOLUME_ID, DEMO_TEMPLATE_ID, DEMO_TEST_NETWORK_ID, DEMO_WIN_BOOT_VOLUME_ID,
    DEMO_WIN_DATA_VOLUME_ID, DEMO_ZONE_ID,
};
use simulators::faults::FaultRule;
use simulators::linstor::{
    self as ls_sim, DEMO_RD_PGTEST1_DISK0, DEMO_RD_WIN2019_APP_DISK0, DEMO_RD_WIN2019_APP_DISK1,
    LinstorSim, LinstorSimConfig,
};
use step_worker::steps::{Executors, StepContext, StepResult, outputs};

const PG_JOB: &str = "enhanced-test-failover-420570c7-f61f-a930-77c5-1e876786cb3c-1795729442";
const WIN_JOB: &str = "enhanced-test-failover-4205a1b2-3c4d-4e6f-8a8b-9c0d1e2f3a4b-1795729443";
const SNAPSHOT: &str = "test-420570c7-1";

/// The forward steps of a test failover, in order.
const FORWARD: [StepName; 6] = [
    StepName::Validation,
    StepName::Snapshot,
    StepName::VirtioInjection,
    StepName::TestVmCreation,
    StepName::VolumeAttachment,
    StepName::TestVmStartup,
];

/// The cleanup job's steps, in order.
const CLEANUP: [StepName; 6] = [
    StepName::TestVmShutdown,
    StepName::VolumeDetachment,
    StepName::SnapshotRollback,
    StepName::VolumeReattachment,
    StepName::TestVmDestruction,
    StepName::SnapshotDeletion,
];

struct Harness {
    exec: Executors,
    cloudstack: Arc<CloudStackSim>,
    linstor: Arc<LinstorSim>,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn serve(router: axum::Router, shutdown: CancellationToken) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(simulators::server::serve(listener, router, async move {
        shutdown.cancelled().await
    }));
    addr
}

async fn harness() -> Harness {
    harness_with(|_| {}).await
}

/// Both simulators with the demo scenario, and executors built from the
/// default settings pointed at them (short polls and backoffs).
async fn harness_with(tweak: impl FnOnce(&mut Settings)) -> Harness {
    let shutdown = CancellationToken::new();
    let cloudstack = Arc::new(CloudStackSim::new(CloudStackSimConfig {
        async_job_duration: Duration::from_millis(30),
        ..Default::default()
    }));
    cloudstack.seed_demo().unwrap();
    let linstor = Arc::new(LinstorSim::new(LinstorSimConfig::default()));
    linstor.seed_demo();
    let cs_addr = serve(cs_sim::router(cloudstack.clone()), shutdown.clone()).await;
    let ls_addr = serve(ls_sim::router(linstor.clone()), shutdown.clone()).await;

    let mut settings = Settings::load(None).unwrap();
    settings.cloudstack.endpoint = format!("http://{cs_addr}/client/api").parse().unwrap();
    settings.cloudstack.async_poll_initial = Duration::from_millis(20);
    settings.cloudstack.async_poll_max = Duration::from_millis(100);
    settings.cloudstack.async_job_deadline = Duration::from_secs(20);
    settings.cloudstack.retry_initial_backoff = Duration::from_millis(20);
    settings.cloudstack.retry_max_backoff = Duration::from_millis(100);
    settings.cloudstack.request_timeout = Duration::from_secs(10);
    settings.linstor.endpoint = format!("http://{ls_addr}").parse().unwrap();
    settings.linstor.retry_initial_backoff = Duration::from_millis(20);
    settings.linstor.retry_max_backoff = Duration::from_millis(100);
    settings.linstor.request_timeout = Duration::from_secs(10);
    settings.worker.vm_stop_deadline = Duration::from_secs(5);
    tweak(&mut settings);
    Harness {
        exec: Executors::new(&settings).unwrap(),
        cloudstack,
        linstor,
        shutdown,
    }
}

fn disk(disk_id: &str, volume: &str, rd: &str, boot: bool, order: u32) -> pb::DiskSpec {
    pb::DiskSpec {
        disk_id: disk_id.to_owned(),
        cloudstack_volume_id: volume.to_owned(),
        linstor_resource: rd.to_owned(),
        device_path: format!("/dev/drbd/by-res/{rd}/0"),
        boot,
        order,
    }
}

/// A test failover of the demo VM `pgtest1` (Linux, one disk).
fn pg_task() -> pb::StepTask {
    task(
        PG_JOB,
        pb::VmSpec {
            vm_id: "420570c7-f61f-a930-77c5-1e876786cb3c".into(),
            vm_name: "pgtest1".into(),
            os_family: "linux".into(),
            cpu_count: 2,
            memory_mb: 4096,
            disks: vec![disk(
                "disk-0",
                DEMO_PG_BOOT_VOLUME_ID,
                DEMO_RD_PGTEST1_DISK0,
                true,
                0,
            )],
            nics: vec![nic()],
        },
    )
}

/// A test failover of the demo VM `win2019-app` (two disks). Its VirtIO
/// injection is left out of the runs here: it needs the virt-customize
/// stand-in and touches no CloudStack or LINSTOR state.
fn win_task() -> pb::StepTask {
    task(
        WIN_JOB,
        pb::VmSpec {
            vm_id: "4205a1b2-3c4d-4e6f-8a8b-9c0d1e2f3a4b".into(),
            vm_name: "win2019-app".into(),
            os_family: "windows".into(),
            cpu_count: 2,
            memory_mb: 4096,
            disks: vec![
                disk(
                    "disk-0",
                    DEMO_WIN_BOOT_VOLUME_ID,
                    DEMO_RD_WIN2019_APP_DISK0,
                    true,
                    0,
                ),
                disk(
                    "disk-1",
                    DEMO_WIN_DATA_VOLUME_ID,
                    DEMO_RD_WIN2019_APP_DISK1,
                    false,
                    1,
                ),
            ],
            nics: vec![nic()],
        },
    )
}

fn nic() -> pb::NicSpec {
    pb::NicSpec {
        source_network: "VM Network".into(),
        test_network_id: DEMO_TEST_NETWORK_ID.into(),
        live_network_id: String::new(),
    }
}

fn task(job_id: &str, vm: pb::VmSpec) -> pb::StepTask {
    pb::StepTask {
        job_id: job_id.to_owned(),
        correlation_id: "8d38bf26-0d4c-4b43-9a4e-2f0e6d2b1c11".into(),
        step_name: String::new(),
        attempt: 1,
        job_type: "test".into(),
        vm: Some(vm),
        network_mappings: [("VM Network".to_owned(), DEMO_TEST_NETWORK_ID.to_owned())]
            .into_iter()
            .collect(),
        outputs: Default::default(),
        snapshot_name: SNAPSHOT.into(),
        placement: Some(pb::Placement {
            zone_id: DEMO_ZONE_ID.into(),
            template_id: DEMO_TEMPLATE_ID.into(),
            appliance_vm_id: DEMO_APPLIANCE_VM_ID.into(),
        }),
    }
}

/// One attempt of `step` with the outputs recorded so far; the outputs of
/// a success join them, as the gateway merges them into later tasks.
struct Run {
    result: StepResult,
    log: String,
}

async fn run(
    h: &Harness,
    base: &pb::StepTask,
    outputs: &mut BTreeMap<String, String>,
    step: StepName,
) -> Run {
    let mut task = base.clone();
    task.step_name = step.as_str().to_owned();
    task.outputs = outputs.clone().into_iter().collect();
    let ctx = StepContext::new(task, step, CancellationToken::new());
    let result = h.exec.execute(&ctx).await;
    if let StepResult::Succeeded { outputs: made, .. } = &result {
        outputs.extend(made.clone());
    }
    Run {
        result,
        log: ctx.log.text(),
    }
}

/// Runs `step` and expects it to succeed; answers its message.
async fn succeed(
    h: &Harness,
    base: &pb::StepTask,
    outputs: &mut BTreeMap<String, String>,
    step: StepName,
) -> String {
    let run = run(h, base, outputs, step).await;
    match run.result {
        StepResult::Succeeded { message, .. } => message,
        StepResult::Skipped { reason } if step == StepName::VirtioInjection => reason,
        other => panic!("{step} did not succeed: {other:?}\nlog:\n{}", run.log),
    }
}

async fn forward(h: &Harness, base: &pb::StepTask, steps: &[StepName]) -> BTreeMap<String, String> {
    let mut outputs = BTreeMap::new();
    for step in steps {
        succeed(h, base, &mut outputs, *step).await;
    }
    outputs
}

/// What the undo must restore in CloudStack: the VMs with their states and
/// every volume with its owner, device, type and state (timestamps and
/// jobs left out).
fn cloudstack_view(h: &Harness) -> Value {
    let state = h.cloudstack.state_json();
    let mut vms: Vec<Value> = state["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| json!({"id": v["id"], "name": v["name"], "state": v["state"]}))
        .collect();
    vms.sort_by_key(|v| v["id"].as_str().unwrap().to_owned());
    let mut volumes: Vec<Value> = state["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            json!({
                "id": v["id"], "type": v["type"], "state": v["state"], "size": v["size"],
                "virtualmachineid": v["virtualmachineid"], "deviceid": v["deviceid"],
            })
        })
        .collect();
    volumes.sort_by_key(|v| v["id"].as_str().unwrap().to_owned());
    json!({"vms": vms, "volumes": volumes})
}

/// The LINSTOR resource definitions with their snapshot names.
fn snapshots(h: &Harness) -> BTreeMap<String, Vec<String>> {
    h.linstor
        .state()
        .resource_definitions
        .iter()
        .map(|rd| {
            (
                rd.name.clone(),
                rd.snapshots.iter().map(|s| s.name.clone()).collect(),
            )
        })
        .collect()
}

fn rollbacks(h: &Harness, rd: &str) -> Vec<String> {
    h.linstor
        .state()
        .resource_definitions
        .iter()
        .find(|r| r.name == rd)
        .unwrap()
        .rollbacks
        .iter()
        .map(|r| r.snapshot.clone())
        .collect()
}

fn volume<'a>(view: &'a Value, id: &str) -> &'a Value {
    view["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("volume {id} is missing"))
}

fn has_vm(view: &Value, id: &str) -> bool {
    view["vms"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["id"] == id)
}

fn has_volume(view: &Value, id: &str) -> bool {
    view["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["id"] == id)
}

fn failed(result: &StepResult) -> (ErrorCode, &str, bool) {
    match result {
        StepResult::Failed {
            code,
            message,
            retryable,
        } => (*code, message.as_str(), *retryable),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_full_test_failover_is_undone_to_the_state_before_it() {
    let h = harness().await;
    let base = pg_task();
    let cs_before = cloudstack_view(&h);
    let snaps_before = snapshots(&h);
    assert_eq!(volume(&cs_before, DEMO_PG_BOOT_VOLUME_ID)["deviceid"], 3);

    let mut outputs = forward(&h, &base, &FORWARD).await;
    let dest = outputs[outputs::DESTINATION_VM_ID].clone();
    let template_root = outputs[outputs::TEMPLATE_ROOT_VOLUME_ID].clone();
    assert_eq!(outputs[&outputs::appliance_device("disk-0")], "3");
    let during = cloudstack_view(&h);
    assert!(has_vm(&during, &dest));
    let boot = volume(&during, DEMO_PG_BOOT_VOLUME_ID);
    assert_eq!(boot["virtualmachineid"], dest.as_str());
    assert_eq!(boot["deviceid"], 0);
    assert!(
        !has_volume(&during, &template_root),
        "the volume step deletes it"
    );
    assert_eq!(snapshots(&h)[DEMO_RD_PGTEST1_DISK0], vec![SNAPSHOT]);

    let mut messages = Vec::new();
    for step in CLEANUP {
        messages.push(succeed(&h, &base, &mut outputs, step).await);
    }
    assert!(messages[0].contains("stopped"), "{}", messages[0]);
    assert!(
        messages[1].contains(DEMO_PG_BOOT_VOLUME_ID),
        "{}",
        messages[1]
    );
    assert!(messages[3].contains("at device 3"), "{}", messages[3]);
    assert!(messages[4].contains("with expunge"), "{}", messages[4]);

    let cs_after = cloudstack_view(&h);
    assert_eq!(cs_after, cs_before, "CloudStack is as before the failover");
    assert!(!has_vm(&cs_after, &dest));
    assert!(!has_volume(&cs_after, &template_root));
    let boot = volume(&cs_after, DEMO_PG_BOOT_VOLUME_ID);
    assert_eq!(boot["virtualmachineid"], DEMO_APPLIANCE_VM_ID);
    assert_eq!(boot["deviceid"], 3);
    assert_eq!(snapshots(&h), snaps_before, "no snapshot is left");
    assert_eq!(rollbacks(&h, DEMO_RD_PGTEST1_DISK0), vec![SNAPSHOT]);
    assert!(rollbacks(&h, DEMO_RD_WIN2019_APP_DISK0).is_empty());
}

#[tokio::test]
async fn a_two_disk_failover_is_undone_with_devices_in_order() {
    let h = harness().await;
    let base = win_task();
    let cs_before = cloudstack_view(&h);
    let steps: Vec<StepName> = FORWARD
        .into_iter()
        .filter(|s| *s != StepName::VirtioInjection)
        .collect();
    let mut outputs = forward(&h, &base, &steps).await;
    assert_eq!(outputs[&outputs::appliance_device("disk-0")], "1");
    assert_eq!(outputs[&outputs::appliance_device("disk-1")], "2");
    let dest = outputs[outputs::DESTINATION_VM_ID].clone();
    let during = cloudstack_view(&h);
    assert_eq!(
        volume(&during, DEMO_WIN_DATA_VOLUME_ID)["virtualmachineid"],
        dest.as_str()
    );

    for step in CLEANUP {
        succeed(&h, &base, &mut outputs, step).await;
    }
    assert_eq!(cloudstack_view(&h), cs_before);
    assert!(snapshots(&h).values().all(Vec::is_empty));
    assert_eq!(rollbacks(&h, DEMO_RD_WIN2019_APP_DISK0), vec![SNAPSHOT]);
    assert_eq!(rollbacks(&h, DEMO_RD_WIN2019_APP_DISK1), vec![SNAPSHOT]);
}

#[tokio::test]
async fn every_undo_step_is_harmless_when_run_again() {
    let h = harness().await;
    let base = pg_task();
    let cs_before = cloudstack_view(&h);
    let mut outputs = forward(&h, &base, &FORWARD).await;

    let mut second_messages = Vec::new();
    for step in CLEANUP {
        succeed(&h, &base, &mut outputs, step).await;
        let cs_once = cloudstack_view(&h);
        let snaps_once = snapshots(&h);
        let rollbacks_once = rollbacks(&h, DEMO_RD_PGTEST1_DISK0);
        let again = succeed(&h, &base, &mut outputs, step).await;
        assert_eq!(
            cloudstack_view(&h),
            cs_once,
            "{step} again changed CloudStack"
        );
        assert_eq!(
            snapshots(&h),
            snaps_once,
            "{step} again changed the snapshots"
        );
        if step == StepName::SnapshotRollback {
            // Rolling back again restores the same content: the disk is on
            // no VM, nothing wrote to it in between.
            assert_eq!(
                rollbacks(&h, DEMO_RD_PGTEST1_DISK0),
                vec![SNAPSHOT, SNAPSHOT]
            );
        } else {
            assert_eq!(rollbacks(&h, DEMO_RD_PGTEST1_DISK0), rollbacks_once);
        }
        second_messages.push(again);
    }
    let expected = [
        "is already stopped",
        "none of the 1 replicated volume(s) is attached",
        "rolled 1 disk(s) back",
        "already there",
        "does not exist",
        "no snapshot test-420570c7-1 was left to delete",
    ];
    for (message, wanted) in second_messages.iter().zip(expected) {
        assert!(message.contains(wanted), "{message:?} lacks {wanted:?}");
    }
    assert_eq!(cloudstack_view(&h), cs_before);

    // The whole cleanup once more, after it completed: nothing changes. The
    // rollback alone cannot pass, since its snapshot is deleted by then, and
    // says so instead of touching the disk.
    for step in CLEANUP {
        let again = run(&h, &base, &mut outputs, step).await;
        if step == StepName::SnapshotRollback {
            let (code, message, retryable) = failed(&again.result);
            assert_eq!(code, ErrorCode::CleanupFailed);
            assert_eq!(
                message,
                format!(
                    "snapshot {SNAPSHOT} of {DEMO_RD_PGTEST1_DISK0} does not exist: there is nothing to roll back to"
                )
            );
            assert!(!retryable);
        } else {
            assert_eq!(
                again.result.kind(),
                "succeeded",
                "{step}: {:?}",
                again.result
            );
        }
    }
    assert_eq!(cloudstack_view(&h), cs_before);
    assert!(snapshots(&h)[DEMO_RD_PGTEST1_DISK0].is_empty());
    assert_eq!(
        rollbacks(&h, DEMO_RD_PGTEST1_DISK0),
        vec![SNAPSHOT, SNAPSHOT]
    );
}

#[tokio::test]
async fn destruction_refuses_while_a_replicated_volume_is_attached() {
    let h = harness().await;
    let base = pg_task();
    let mut outputs = forward(&h, &base, &FORWARD).await;
    let dest = outputs[outputs::DESTINATION_VM_ID].clone();

    // Running, with the boot disk as its root disk.
    let refused = run(&h, &base, &mut outputs, StepName::TestVmDestruction).await;
    let (code, message, retryable) = failed(&refused.result);
    assert_eq!(code, ErrorCode::CleanupFailed);
    assert!(!retryable);
    assert_eq!(
        message,
        format!(
            "refusing to destroy VM {dest}: replicated volume {DEMO_PG_BOOT_VOLUME_ID} is still attached (device 0)"
        )
    );

    // Stopped, the volume still attached: the same.
    succeed(&h, &base, &mut outputs, StepName::TestVmShutdown).await;
    let refused = run(&h, &base, &mut outputs, StepName::CompensationVmDestruction).await;
    let (_, message, retryable) = failed(&refused.result);
    assert!(message.starts_with(&format!("refusing to destroy VM {dest}")));
    assert!(!retryable);

    let view = cloudstack_view(&h);
    assert!(has_vm(&view, &dest));
    assert_eq!(
        volume(&view, DEMO_PG_BOOT_VOLUME_ID)["virtualmachineid"],
        dest.as_str()
    );

    // Detached, the destruction goes ahead and the replica survives it.
    succeed(&h, &base, &mut outputs, StepName::VolumeDetachment).await;
    succeed(&h, &base, &mut outputs, StepName::TestVmDestruction).await;
    let view = cloudstack_view(&h);
    assert!(!has_vm(&view, &dest));
    assert!(volume(&view, DEMO_PG_BOOT_VOLUME_ID)["virtualmachineid"].is_null());
}

#[tokio::test]
async fn detachment_refuses_while_the_vm_runs() {
    let h = harness().await;
    let base = pg_task();
    let mut outputs = forward(&h, &base, &FORWARD).await;
    let refused = run(&h, &base, &mut outputs, StepName::VolumeDetachment).await;
    let (code, message, retryable) = failed(&refused.result);
    assert_eq!(code, ErrorCode::CleanupFailed);
    assert!(message.contains("is Running"), "{message}");
    assert!(!retryable);
    let dest = outputs[outputs::DESTINATION_VM_ID].clone();
    assert_eq!(
        volume(&cloudstack_view(&h), DEMO_PG_BOOT_VOLUME_ID)["virtualmachineid"],
        dest.as_str()
    );

    // Nor is a disk rolled back under the VM.
    let refused = run(&h, &base, &mut outputs, StepName::SnapshotRollback).await;
    let (_, message, retryable) = failed(&refused.result);
    assert_eq!(
        message,
        format!(
            "refusing to roll back {DEMO_RD_PGTEST1_DISK0}: its volume {DEMO_PG_BOOT_VOLUME_ID} is still attached to VM {dest}"
        )
    );
    assert!(!retryable);
    assert!(rollbacks(&h, DEMO_RD_PGTEST1_DISK0).is_empty());
}

#[tokio::test]
async fn rollback_and_deletion_skip_without_a_snapshot_name() {
    let h = harness().await;
    let mut base = pg_task();
    base.snapshot_name = String::new();
    let mut outputs = BTreeMap::new();
    for step in [
        StepName::SnapshotRollback,
        StepName::SnapshotDeletion,
        StepName::CompensationSnapshotRollback,
        StepName::CompensationSnapshotDeletion,
    ] {
        let run = run(&h, &base, &mut outputs, step).await;
        assert_eq!(
            run.result,
            StepResult::Skipped {
                reason: "the failover took no snapshot".into()
            },
            "{step}"
        );
    }
    assert!(rollbacks(&h, DEMO_RD_PGTEST1_DISK0).is_empty());
}

#[tokio::test]
async fn rollback_failures_name_their_cause() {
    let h = harness().await;
    let base = pg_task();
    let mut outputs = forward(&h, &base, &[StepName::Snapshot]).await;

    // A snapshot that was never taken: no retry brings it.
    let mut other = base.clone();
    other.snapshot_name = "test-never-taken".into();
    let missing = run(&h, &other, &mut outputs, StepName::SnapshotRollback).await;
    let (code, message, retryable) = failed(&missing.result);
    assert_eq!(code, ErrorCode::CleanupFailed);
    assert!(message.contains("test-never-taken"), "{message}");
    assert!(message.contains(DEMO_RD_PGTEST1_DISK0), "{message}");
    assert!(!retryable);

    // In use (997): it may pass later.
    assert!(h.linstor.set_in_use(DEMO_RD_PGTEST1_DISK0, None));
    let busy = run(&h, &base, &mut outputs, StepName::SnapshotRollback).await;
    let (_, message, retryable) = failed(&busy.result);
    assert!(message.contains("in use"), "{message}");
    assert!(retryable);
    assert!(rollbacks(&h, DEMO_RD_PGTEST1_DISK0).is_empty());

    assert!(h.linstor.clear_in_use(DEMO_RD_PGTEST1_DISK0));
    succeed(&h, &base, &mut outputs, StepName::SnapshotRollback).await;
    assert_eq!(rollbacks(&h, DEMO_RD_PGTEST1_DISK0), vec![SNAPSHOT]);
}

#[tokio::test]
async fn a_partial_failover_is_undone() {
    let h = harness().await;
    let base = pg_task();
    let cs_before = cloudstack_view(&h);
    let mut outputs = forward(
        &h,
        &base,
        &[
            StepName::Validation,
            StepName::Snapshot,
            StepName::VirtioInjection,
            StepName::TestVmCreation,
        ],
    )
    .await;
    let dest = outputs[outputs::DESTINATION_VM_ID].clone();
    let template_root = outputs[outputs::TEMPLATE_ROOT_VOLUME_ID].clone();
    let during = cloudstack_view(&h);
    assert!(has_vm(&during, &dest));
    assert_eq!(
        volume(&during, &template_root)["virtualmachineid"],
        dest.as_str()
    );
    assert_eq!(
        volume(&during, DEMO_PG_BOOT_VOLUME_ID)["virtualmachineid"],
        DEMO_APPLIANCE_VM_ID
    );

    let compensation = [
        StepName::CompensationVmShutdown,
        StepName::CompensationVolumeDetachment,
        StepName::CompensationSnapshotRollback,
        StepName::CompensationVolumeReattachment,
        StepName::CompensationVmDestruction,
        StepName::CompensationSnapshotDeletion,
    ];
    let mut messages = Vec::new();
    for step in compensation {
        messages.push(succeed(&h, &base, &mut outputs, step).await);
    }
    assert!(messages[0].contains("already stopped"), "{}", messages[0]);
    assert!(messages[1].contains("none of the 1"), "{}", messages[1]);
    assert!(messages[3].contains("already there"), "{}", messages[3]);
    assert!(messages[4].contains("with expunge"), "{}", messages[4]);

    let after = cloudstack_view(&h);
    assert_eq!(after, cs_before);
    assert!(!has_vm(&after, &dest));
    assert!(!has_volume(&after, &template_root));
    assert!(snapshots(&h)[DEMO_RD_PGTEST1_DISK0].is_empty());
    assert_eq!(rollbacks(&h, DEMO_RD_PGTEST1_DISK0), vec![SNAPSHOT]);
}

#[tokio::test]
async fn undo_before_any_vm_was_created_does_nothing() {
    let h = harness().await;
    let base = pg_task();
    let cs_before = cloudstack_view(&h);
    let mut outputs = BTreeMap::new();
    let mut results = Vec::new();
    for step in CLEANUP {
        results.push(run(&h, &base, &mut outputs, step).await.result);
    }
    let message = |r: &StepResult| match r {
        StepResult::Succeeded { message, .. } => message.clone(),
        other => panic!("expected a success, got {other:?}"),
    };
    assert!(message(&results[0]).contains("no destination VM was created"));
    assert!(message(&results[1]).contains("no destination VM was created"));
    assert_eq!(
        results[2],
        StepResult::Skipped {
            reason: format!(
                "the failover did not get past its snapshot step ({SNAPSHOT}), so it never touched the disks"
            )
        }
    );
    assert!(message(&results[3]).contains("already there"));
    assert!(message(&results[4]).contains("no destination VM was created"));
    assert!(message(&results[5]).contains("no snapshot"));
    assert_eq!(cloudstack_view(&h), cs_before);
    assert!(rollbacks(&h, DEMO_RD_PGTEST1_DISK0).is_empty());
}

#[tokio::test]
async fn reattachment_restores_the_recorded_device_or_takes_the_next_free_one() {
    let h = harness().await;
    let base = pg_task();
    let mut outputs = forward(&h, &base, &FORWARD).await;
    for step in [StepName::TestVmShutdown, StepName::VolumeDetachment] {
        succeed(&h, &base, &mut outputs, step).await;
    }
    // Another failover took win2019-app's boot disk (device 1) off the
    // appliance meanwhile: the next free slot is 1, the recorded one 3.
    h.exec
        .cloudstack
        .detach_volume(DEMO_WIN_BOOT_VOLUME_ID)
        .await
        .unwrap();
    let message = succeed(&h, &base, &mut outputs, StepName::VolumeReattachment).await;
    assert!(message.contains("at device 3"), "{message}");
    assert_eq!(
        volume(&cloudstack_view(&h), DEMO_PG_BOOT_VOLUME_ID)["deviceid"],
        3
    );

    // With device 3 taken, the volume goes to the next free slot.
    h.exec
        .cloudstack
        .detach_volume(DEMO_PG_BOOT_VOLUME_ID)
        .await
        .unwrap();
    h.exec
        .cloudstack
        .attach_volume(DEMO_WIN_BOOT_VOLUME_ID, DEMO_APPLIANCE_VM_ID, Some(3))
        .await
        .unwrap();
    let run = run(&h, &base, &mut outputs, StepName::VolumeReattachment).await;
    assert!(
        matches!(&run.result, StepResult::Succeeded { message, .. } if message.contains("at device 1")),
        "{:?}",
        run.result
    );
    assert!(
        run.log.contains("device 3 of the appliance is taken"),
        "{}",
        run.log
    );
}

#[tokio::test]
async fn reattachment_moves_a_volume_off_a_stopped_vm_but_not_off_a_running_one() {
    let h = harness().await;
    let base = pg_task();
    let mut outputs = forward(&h, &base, &FORWARD).await;
    let dest = outputs[outputs::DESTINATION_VM_ID].clone();

    let refused = run(&h, &base, &mut outputs, StepName::VolumeReattachment).await;
    let (_, message, retryable) = failed(&refused.result);
    assert!(message.contains("root disk of the running VM"), "{message}");
    assert!(message.contains(&dest), "{message}");
    assert!(!retryable);

    succeed(&h, &base, &mut outputs, StepName::TestVmShutdown).await;
    let message = succeed(&h, &base, &mut outputs, StepName::VolumeReattachment).await;
    assert!(message.contains("at device 3"), "{message}");
    assert_eq!(
        volume(&cloudstack_view(&h), DEMO_PG_BOOT_VOLUME_ID)["virtualmachineid"],
        DEMO_APPLIANCE_VM_ID
    );
}

#[tokio::test]
async fn a_stop_that_outlives_the_deadline_is_forced() {
    let h = harness_with(|s| s.worker.vm_stop_deadline = Duration::from_millis(300)).await;
    let base = pg_task();
    let mut outputs = forward(&h, &base, &FORWARD).await;
    let dest = outputs[outputs::DESTINATION_VM_ID].clone();
    // The graceful stop never answers.
    h.cloudstack
        .faults()
        .add(FaultRule {
            operation: "stopVirtualMachine".into(),
            latency_ms: 0,
            failure_rate: 0.0,
            failure_status: None,
            hang: true,
            fail_async_job: false,
            remaining: Some(1),
        })
        .unwrap();
    let run = run(&h, &base, &mut outputs, StepName::TestVmShutdown).await;
    assert!(
        matches!(&run.result, StepResult::Succeeded { message, .. } if message.contains("powered off")),
        "{:?}\n{}",
        run.result,
        run.log
    );
    assert!(run.log.contains("did not stop within 300ms"), "{}", run.log);
    let view = cloudstack_view(&h);
    let vm = view["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == dest.as_str())
        .unwrap();
    assert_eq!(vm["state"], "Stopped");
}
