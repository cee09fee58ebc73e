//! A worker process killed with SIGKILL at each point of a step, and a
//! zombie worker whose report arrives after its lease ran out. The worker
//! processes talk to the gateway through a tap that holds the chosen call,
//! so the kill lands exactly there:
//!
//! - before the claim reached the gateway: no lease was taken, the broker
//!   redelivers the unacked message and the step runs under the same attempt;
//! - after the gateway granted the claim, before the worker acked: the
//!   redelivered message's claim is refused, the lease expires, the step
//!   runs under attempt 2;
//! - mid-step (between the volume moves): attempt 2 continues where attempt
//!   1 stopped;
//! - after the external call, before the report: attempt 2 finds the VM the
//!   dead worker made;
//!
//! and in every case nothing exists twice.

mod common;
mod harness;

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use common::{LINUX_VM_ID, Stack, WIN_VM_ID, workspace_bin};
use harness::processes::{Proc, worker_env};
use harness::tap::{Point, Release, Tap};
use simulators::cloudstack as cs_sim;
use simulators::linstor as ls_sim;

const WITHIN: Duration = Duration::from_secs(90);

struct Scene {
    stack: Stack,
    tap: Tap,
    tap_url: String,
    logs: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Scene {
    async fn start() -> Scene {
        let stack = Stack::start().await;
        stack.register_demo_vms().await;
        let shutdown = CancellationToken::new();
        let (tap, tap_url) = Tap::start(&stack.grpc_url, shutdown.clone()).await;
        Scene {
            stack,
            tap,
            tap_url,
            logs: tempfile::tempdir().unwrap(),
            shutdown,
        }
    }

    /// A worker process for every step, talking to the gateway through the tap.
    fn worker(&self, id: &str) -> Proc {
        Proc::start(
            id,
            workspace_bin("step-worker"),
            Vec::new(),
            worker_env(&self.stack.settings, &self.tap_url, id),
            self.logs.path(),
        )
    }

    async fn finish(self) {
        self.shutdown.cancel();
        self.stack.stop().await;
    }
}

fn step<'a>(job: &'a Value, name: &str) -> &'a Value {
    job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {job:#}"))
}

fn snapshots_of(stack: &Stack, rd: &str) -> Vec<String> {
    stack
        .linstor
        .state()
        .resource_definitions
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(rd))
        .map(|r| r.snapshots.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default()
}

/// One running VM for the job, holding exactly the VM's replicated volumes
/// (boot disk at device 0), one snapshot per disk: nothing twice.
fn assert_landed_once(stack: &Stack, job: &Value, volumes: &[&str], resources: &[&str]) {
    let vms = stack.destination_vms();
    assert_eq!(vms.len(), 1, "exactly one VM: {vms:#?}");
    assert_eq!(vms[0]["state"], "Running");
    assert_eq!(job["destination_vm_id"], vms[0]["id"]);
    let state = stack.cloudstack_state();
    let on_vm: Vec<&Value> = state["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["virtualmachineid"] == vms[0]["id"])
        .collect();
    assert_eq!(
        on_vm.len(),
        volumes.len(),
        "only the replicated volumes, each once: {on_vm:#?}"
    );
    for (i, id) in volumes.iter().enumerate() {
        let volume = stack.volume(id);
        assert_eq!(volume["virtualmachineid"], vms[0]["id"], "{volume:#}");
        if i == 0 {
            assert_eq!(volume["deviceid"], 0, "the boot disk at device 0");
        }
    }
    let snapshot = job["linstor_snapshot_name"].as_str().unwrap();
    for rd in resources {
        assert_eq!(
            snapshots_of(stack, rd),
            vec![snapshot.to_owned()],
            "one snapshot of {rd}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_before_its_claim_reached_the_gateway_the_step_runs_once_under_the_same_attempt() {
    let scene = Scene::start().await;
    let mut hold = scene
        .tap
        .hold(Point::BeforeClaim, "doomed-before-claim", "snapshot");
    let mut doomed = scene.worker("doomed-before-claim");
    let job_id = scene
        .stack
        .start_failover("test", json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
        .await;
    hold.held(WITHIN).await;
    doomed.kill9().await;
    hold.release(Release::Drop);

    let _rescuer = scene.worker("rescuer");
    let job = scene.stack.wait_terminal(&job_id, WITHIN).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(
        step(&job, "snapshot")["attempt"],
        1,
        "no lease was taken, so no attempt was spent"
    );
    let claims = scene.tap.calls_for("claim", &job_id, "snapshot");
    assert!(
        claims.iter().all(|c| c.worker_id == "rescuer"),
        "the dead worker's claim never reached the gateway: {claims:?}"
    );
    assert_eq!(
        claims.iter().filter(|c| c.ok == Some(true)).count(),
        1,
        "{claims:?}"
    );
    assert_landed_once(
        &scene.stack,
        &job,
        &[cs_sim::DEMO_PG_BOOT_VOLUME_ID],
        &[ls_sim::DEMO_RD_PGTEST1_DISK0],
    );
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_the_claim_before_the_ack_the_step_runs_again_under_attempt_2() {
    let scene = Scene::start().await;
    let mut hold = scene
        .tap
        .hold(Point::AfterClaim, "doomed-after-claim", "snapshot");
    let mut doomed = scene.worker("doomed-after-claim");
    let job_id = scene
        .stack
        .start_failover("test", json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
        .await;
    hold.held(WITHIN).await;
    doomed.kill9().await;
    hold.release(Release::Drop);

    let _rescuer = scene.worker("rescuer");
    let job = scene.stack.wait_terminal(&job_id, WITHIN).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(step(&job, "snapshot")["attempt"], 2, "{job:#}");
    let claims = scene.tap.calls_for("claim", &job_id, "snapshot");
    let summary: Vec<_> = claims
        .iter()
        .map(|c| (c.worker_id.as_str(), c.attempt, c.ok))
        .collect();
    assert_eq!(
        summary[0],
        ("doomed-after-claim", 1, Some(true)),
        "{claims:?}"
    );
    assert!(
        summary.contains(&("rescuer", 1, Some(false))),
        "the unacked message came back and its claim was refused: {claims:?}"
    );
    assert!(summary.contains(&("rescuer", 2, Some(true))), "{claims:?}");
    assert_eq!(
        claims.iter().filter(|c| c.ok == Some(true)).count(),
        2,
        "{claims:?}"
    );
    assert_landed_once(
        &scene.stack,
        &job,
        &[cs_sim::DEMO_PG_BOOT_VOLUME_ID],
        &[ls_sim::DEMO_RD_PGTEST1_DISK0],
    );
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_between_two_volume_moves_the_retry_continues_without_a_second_attachment() {
    let scene = Scene::start().await;
    let mut doomed = scene.worker("doomed-mid-step");
    let job_id = scene
        .stack
        .start_failover(
            "test",
            json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app"}),
        )
        .await;
    // Volume moves take a while once the VM exists, so the kill lands
    // between them.
    let stack = &scene.stack;
    harness::eventually(WITHIN, "the VM is created", || async {
        let (_, body) = stack.get(&format!("/api/v1/failover/jobs/{job_id}")).await;
        (step(&body["data"], "test-vm-creation")["status"] == "completed").then_some(())
    })
    .await;
    stack
        .cloudstack
        .set_async_job_duration(Duration::from_secs(2));
    harness::eventually(WITHIN, "the boot disk left the appliance", || async {
        let boot = stack.volume(cs_sim::DEMO_WIN_BOOT_VOLUME_ID);
        (boot["virtualmachineid"] != cs_sim::DEMO_APPLIANCE_VM_ID).then_some(())
    })
    .await;
    let (_, body) = stack.get(&format!("/api/v1/failover/jobs/{job_id}")).await;
    let moving = step(&body["data"], "volume-attachment").clone();
    assert_eq!(moving["status"], "running", "{moving:#}");
    assert_eq!(moving["attempt"], 1);
    let data = stack.volume(cs_sim::DEMO_WIN_DATA_VOLUME_ID);
    assert_eq!(
        data["virtualmachineid"],
        cs_sim::DEMO_APPLIANCE_VM_ID,
        "killed before the data disk moved"
    );
    doomed.kill9().await;
    stack
        .cloudstack
        .set_async_job_duration(Duration::from_millis(30));

    let _rescuer = scene.worker("rescuer");
    let job = stack.wait_terminal(&job_id, WITHIN).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(step(&job, "volume-attachment")["attempt"], 2, "{job:#}");
    assert_landed_once(
        stack,
        &job,
        &[
            cs_sim::DEMO_WIN_BOOT_VOLUME_ID,
            cs_sim::DEMO_WIN_DATA_VOLUME_ID,
        ],
        &[
            ls_sim::DEMO_RD_WIN2019_APP_DISK0,
            ls_sim::DEMO_RD_WIN2019_APP_DISK1,
        ],
    );
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_the_deploy_before_the_report_the_retry_finds_the_vm() {
    let scene = Scene::start().await;
    let mut hold = scene.tap.hold(
        Point::BeforeReport,
        "doomed-before-report",
        "test-vm-creation",
    );
    let mut doomed = scene.worker("doomed-before-report");
    let job_id = scene
        .stack
        .start_failover("test", json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
        .await;
    hold.held(WITHIN).await;
    assert_eq!(
        scene.stack.destination_vms().len(),
        1,
        "the VM exists; the gateway does not know yet"
    );
    doomed.kill9().await;
    hold.release(Release::Drop);

    let _rescuer = scene.worker("rescuer");
    let job = scene.stack.wait_terminal(&job_id, WITHIN).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(step(&job, "test-vm-creation")["attempt"], 2, "{job:#}");
    let reports = scene.tap.calls_for("report", &job_id, "test-vm-creation");
    assert!(
        reports.iter().all(|r| r.worker_id == "rescuer"),
        "{reports:?}"
    );
    assert_landed_once(
        &scene.stack,
        &job,
        &[cs_sim::DEMO_PG_BOOT_VOLUME_ID],
        &[ls_sim::DEMO_RD_PGTEST1_DISK0],
    );
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zombie_reporting_after_its_lease_expired_is_refused_and_changes_nothing() {
    let scene = Scene::start().await;
    let mut hold = scene
        .tap
        .hold(Point::BeforeReport, "zombie", "test-vm-creation");
    let _zombie = scene.worker("zombie");
    let job_id = scene
        .stack
        .start_failover("test", json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
        .await;
    hold.held(WITHIN).await;
    // The zombie is alive but silent: no heartbeat while it reports, so its
    // lease runs out and attempt 2 runs elsewhere (or on it).
    let _other = scene.worker("other");
    let stack = &scene.stack;
    harness::eventually(WITHIN, "attempt 2 completed the step", || async {
        let (_, body) = stack.get(&format!("/api/v1/failover/jobs/{job_id}")).await;
        let creation = step(&body["data"], "test-vm-creation");
        (creation["status"] == "completed" && creation["attempt"] == 2).then_some(())
    })
    .await;
    hold.release(Release::Forward);
    let late = harness::eventually(WITHIN, "the late report got its answer", || async {
        scene
            .tap
            .calls_for("report", &job_id, "test-vm-creation")
            .into_iter()
            .find(|r| r.worker_id == "zombie" && r.attempt == 1)
    })
    .await;
    assert_eq!(late.ok, Some(false), "the late report is refused: {late:?}");
    assert!(
        late.reason.contains("stale") || late.reason.contains("already"),
        "{late:?}"
    );
    let job = stack.wait_terminal(&job_id, WITHIN).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(step(&job, "test-vm-creation")["attempt"], 2);
    let (stale_rows,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM job_tracking WHERE job_id = $1 AND operation = 'step.test-vm-creation'
         AND status = 'completed' AND (details->>'attempt')::int = 1",
    )
    .bind(&job_id)
    .fetch_one(&stack.pool)
    .await
    .unwrap();
    assert_eq!(stale_rows, 0, "attempt 1 never counted as completed");
    assert_landed_once(
        stack,
        &job,
        &[cs_sim::DEMO_PG_BOOT_VOLUME_ID],
        &[ls_sim::DEMO_RD_PGTEST1_DISK0],
    );
    scene.finish().await;
}
