//! A worker process stopped with SIGTERM: it takes no new step, lets the
//! step in flight finish within `worker.shutdown_grace` (or, when the grace
//! runs out, stops it and hands it back as a retryable failure, killing its
//! virt-customize), and exits 0.

mod common;
mod harness;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use common::{LINUX_VM_ID, Stack, WIN_VM_ID, workspace_bin};
use harness::processes::{Proc, worker_env};
use harness::tap::Tap;
use simulators::virt_customize_standin::ControlFile;

const WITHIN: Duration = Duration::from_secs(90);

fn step<'a>(job: &'a Value, name: &str) -> &'a Value {
    job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {job:#}"))
}

fn process_alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z"))
        .unwrap_or(false)
}

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

    fn worker(&self, id: &str, grace: &str) -> Proc {
        let mut env = worker_env(&self.stack.settings, &self.tap_url, id);
        env.push(("FAILOVER_WORKER__SHUTDOWN_GRACE".into(), grace.into()));
        Proc::start(
            id,
            workspace_bin("step-worker"),
            Vec::new(),
            env,
            self.logs.path(),
        )
    }

    /// Waits until the Windows job's virt-customize runs; its pid.
    async fn virt_customize_running(&self, job_id: &str) -> i64 {
        let stack = &self.stack;
        harness::eventually(WITHIN, "virtio-injection runs", || async {
            let (_, body) = stack.get(&format!("/api/v1/failover/jobs/{job_id}")).await;
            (step(&body["data"], "virtio-injection")["status"] == "running").then_some(())
        })
        .await;
        let record = stack.disk_path("win2019-app-disk0.raw.standin-run.json");
        harness::eventually(
            Duration::from_secs(20),
            "virt-customize started",
            || async {
                let text = std::fs::read_to_string(&record).ok()?;
                let run: Value = serde_json::from_str(&text).ok()?;
                run["pid"].as_i64()
            },
        )
        .await
    }

    fn claims_by(&self, worker: &str) -> usize {
        self.tap
            .calls()
            .iter()
            .filter(|c| c.kind == "claim" && c.worker_id == worker)
            .count()
    }

    async fn finish(self) {
        self.shutdown.cancel();
        self.stack.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_the_step_in_flight_takes_nothing_new_and_exits_0() {
    let scene = Scene::start().await;
    ControlFile {
        duration_ms: Some(4_000),
        ..Default::default()
    }
    .write_beside(&scene.stack.disk_path("win2019-app-disk0.raw"))
    .unwrap();
    let mut stopping = scene.worker("stopping", "20s");
    let windows = scene
        .stack
        .start_failover(
            "test",
            json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app"}),
        )
        .await;
    let pid = scene.virt_customize_running(&windows).await;
    stopping.sigterm();
    let signalled = Instant::now();
    let claims_before = scene.claims_by("stopping");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let linux = scene
        .stack
        .start_failover("test", json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
        .await;

    let status = stopping
        .wait_exit(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| {
            panic!(
                "still running 20 s after SIGTERM:\n{}",
                stopping.log_tail(30)
            )
        });
    assert!(status.success(), "exit status {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "it exited once its step was done, within the grace"
    );
    assert!(!process_alive(pid));
    assert_eq!(
        scene.claims_by("stopping"),
        claims_before,
        "no step was taken after SIGTERM"
    );
    let virtio_reports = scene.tap.calls_for("report", &windows, "virtio-injection");
    assert_eq!(virtio_reports.len(), 1, "{virtio_reports:?}");
    assert_eq!(virtio_reports[0].worker_id, "stopping");
    assert_eq!(virtio_reports[0].ok, Some(true), "{virtio_reports:?}");
    assert!(
        scene
            .stack
            .disk_path("win2019-app-disk0.raw.virtio-injected")
            .exists()
    );

    let _successor = scene.worker("successor", "5s");
    for job_id in [&windows, &linux] {
        let job = scene.stack.wait_terminal(job_id, WITHIN).await;
        assert_eq!(job["status"], "completed", "{job:#}");
    }
    let job = scene.stack.wait_terminal(&windows, WITHIN).await;
    assert_eq!(step(&job, "virtio-injection")["attempt"], 1);
    assert_eq!(step(&job, "virtio-injection")["status"], "completed");
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_with_a_step_longer_than_the_grace_hands_it_back_and_exits_0() {
    let scene = Scene::start().await;
    let boot = scene.stack.disk_path("win2019-app-disk0.raw");
    ControlFile {
        duration_ms: Some(120_000),
        ..Default::default()
    }
    .write_beside(&boot)
    .unwrap();
    let mut stopping = scene.worker("stopping", "2s");
    let job_id = scene
        .stack
        .start_failover(
            "test",
            json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app"}),
        )
        .await;
    let pid = scene.virt_customize_running(&job_id).await;
    stopping.sigterm();
    let signalled = Instant::now();
    let status = stopping
        .wait_exit(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| {
            panic!(
                "still running 20 s after SIGTERM:\n{}",
                stopping.log_tail(30)
            )
        });
    assert!(status.success(), "exit status {status:?}");
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "it waited out the 2 s grace, then stopped: {took:?}"
    );
    assert!(!process_alive(pid), "its virt-customize was killed");
    let reports = scene.tap.calls_for("report", &job_id, "virtio-injection");
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(
        (reports[0].attempt, reports[0].ok),
        (1, Some(true)),
        "handed back: {reports:?}"
    );
    let (_, body) = scene
        .stack
        .get(&format!("/api/v1/failover/jobs/{job_id}"))
        .await;
    let virtio = step(&body["data"], "virtio-injection");
    assert_eq!(virtio["attempt"], 2, "queued again: {virtio:#}");
    assert!(
        virtio["message"]
            .as_str()
            .unwrap_or_default()
            .contains("worker stopped"),
        "{virtio:#}"
    );

    // A worker that is not stopping runs it to the end.
    std::fs::remove_file(boot.with_file_name("win2019-app-disk0.raw.standin.json")).unwrap();
    let _successor = scene.worker("successor", "5s");
    let job = scene.stack.wait_terminal(&job_id, WITHIN).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(step(&job, "virtio-injection")["attempt"], 2);
    assert_eq!(scene.stack.destination_vms().len(), 1);
    scene.finish().await;
}
