//! A worker runs at most `worker.concurrency` steps at once, however many
//! are queued (it acks each message right after its claim, so the broker's
//! prefetch alone does not bound it): at capacity it stops consuming, the
//! waiting tasks stay in their queues rather than unacked on it, and it
//! takes them when a step ends.

mod common;
mod harness;

use std::time::Duration;

use serde_json::json;

use common::{Stack, workspace_bin};
use harness::processes::{Proc, worker_env};
use harness::seed;
use harness::services::queue_depths;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_with_concurrency_1_runs_one_step_at_a_time_and_finishes_them_all() {
    let stack = Stack::start().await;
    let cs = seed::base_of(&stack.settings.cloudstack.endpoint);
    let ls = seed::base_of(&stack.settings.linstor.endpoint);
    // Seven VMs, three of them Windows (their virt-customize runs 2 s).
    let vms = seed::seed_vms(&stack.http, &cs, &ls, stack.disks.path(), "cap", 7, 10).await;
    for vm in &vms {
        seed::register(&stack.http, &stack.base_url, vm).await;
    }
    let logs = tempfile::tempdir().unwrap();
    let mut env = worker_env(&stack.settings, &stack.grpc_url, "single");
    env.push(("FAILOVER_WORKER__CONCURRENCY".into(), "1".into()));
    env.push(("VIRT_CUSTOMIZE_STANDIN_DURATION_MS".into(), "2000".into()));
    let worker = Proc::start(
        "single",
        workspace_bin("step-worker"),
        Vec::new(),
        env,
        logs.path(),
    );
    let mut jobs = Vec::new();
    for vm in vms.iter().filter(|vm| vm.windows) {
        jobs.push(
            stack
                .start_failover("test", json!({"vm_id": vm.vm_id, "vm_name": vm.name}))
                .await,
        );
    }

    let prefix = stack.settings.amqp.prefix.clone();
    let mut most_running = 0;
    let mut most_unacked = 0;
    let mut samples = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (running, open): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM failover_job_steps WHERE status = 'running' AND worker_id = 'single'),
                    (SELECT count(*) FROM failover_jobs WHERE status NOT IN ('completed', 'failed', 'cancelled'))",
        )
        .fetch_one(&stack.pool)
        .await
        .unwrap();
        most_running = most_running.max(running);
        if open == 0 {
            break;
        }
        if running == 1 && samples < 5 {
            samples += 1;
            let unacked: u64 = queue_depths(&prefix).iter().map(|q| q.2).sum();
            most_unacked = most_unacked.max(unacked);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "jobs still open:\n{}",
            worker.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(most_running, 1, "one step at a time");
    assert!(samples > 0);
    assert!(
        most_unacked <= 1,
        "waiting tasks stay in their queues: {most_unacked} unacked"
    );
    for job_id in &jobs {
        let job = stack.wait_terminal(job_id, Duration::from_secs(10)).await;
        assert_eq!(job["status"], "completed", "{job:#}");
    }
    assert_eq!(stack.destination_vms().len(), jobs.len());
    stack.stop().await;
}
