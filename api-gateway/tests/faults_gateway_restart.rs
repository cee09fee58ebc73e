//! Two gateway replicas as real processes, each killed with SIGKILL in the
//! middle of the work and started again: requests go on through the other
//! replica, in-flight jobs continue, the auto-cleanup timer fires once per
//! test failover, every outbox row is published, no step attempt is
//! claimed twice and no lease expiry takes effect twice.

mod common;
mod harness;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use common::{LINUX_VM_ID, Stack, WIN_VM_ID, workspace_bin};
use harness::processes::{Proc, free_addr, gateway_env, worker_env};
use harness::seed;

const WITHIN: Duration = Duration::from_secs(120);

struct Replica {
    proc: Proc,
    rest: SocketAddr,
    grpc: SocketAddr,
}

impl Replica {
    fn start(stack: &Stack, name: &str, logs: &std::path::Path) -> Replica {
        let (rest, grpc) = (free_addr(), free_addr());
        Replica {
            proc: Proc::start(
                name,
                workspace_bin("api-gateway"),
                Vec::new(),
                gateway_env(&stack.settings, rest, grpc),
                logs,
            ),
            rest,
            grpc,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.rest)
    }

    async fn ready(&mut self) {
        let url = format!("{}/health/ready", self.url());
        self.proc.wait_http_ok(&url, WITHIN).await;
    }
}

async fn start_test(http: &reqwest::Client, base: &str, vm_id: &str) -> String {
    let response = http
        .post(format!("{base}/api/v1/failover/test"))
        .json(
            &json!({"vm_id": vm_id, "vm_name": "vm", "auto_cleanup": true, "test_duration": "2s"}),
        )
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body["job_id"].as_str().unwrap().to_owned()
}

/// Jobs with a step running now, and the worker running it.
async fn running_steps(stack: &Stack) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT job_id, coalesce(worker_id, '') FROM failover_job_steps WHERE status = 'running'",
    )
    .fetch_all(&stack.pool)
    .await
    .unwrap()
}

/// Jobs not finished now (each completes in the end).
async fn unfinished_jobs(stack: &Stack) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT job_id FROM failover_jobs WHERE status NOT IN ('completed', 'failed', 'cancelled')",
    )
    .fetch_all(&stack.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateways_killed_and_restarted_lose_nothing_and_fire_each_timer_once() {
    let mut stack = Stack::start_with(|s| {
        s.gateway.lease_duration = Duration::from_secs(5);
    })
    .await;
    // Only the two gateway processes serve from here on.
    stack.stop_gateway(0).await;
    let logs = tempfile::tempdir().unwrap();
    let mut g1 = Replica::start(&stack, "gateway-1", logs.path());
    let mut g2 = Replica::start(&stack, "gateway-2", logs.path());
    g1.ready().await;
    g2.ready().await;
    stack.base_url = g1.url();
    let http = reqwest::Client::new();

    stack.register_demo_vms().await;
    let cs = seed::base_of(&stack.settings.cloudstack.endpoint);
    let ls = seed::base_of(&stack.settings.linstor.endpoint);
    let extra = seed::seed_vms(&http, &cs, &ls, stack.disks.path(), "gw", 4, 10).await;
    for vm in &extra {
        seed::register(&http, &g1.url(), vm).await;
    }
    let before = stack.footprint();
    stack
        .cloudstack
        .set_async_job_duration(Duration::from_millis(400));

    let w1 = Proc::start(
        "worker-1",
        workspace_bin("step-worker"),
        Vec::new(),
        worker_env(&stack.settings, &format!("http://{}", g1.grpc), "w1"),
        logs.path(),
    );
    let w2 = Proc::start(
        "worker-2",
        workspace_bin("step-worker"),
        Vec::new(),
        worker_env(&stack.settings, &format!("http://{}", g2.grpc), "w2"),
        logs.path(),
    );

    let mut vm_ids: Vec<String> = vec![WIN_VM_ID.into(), LINUX_VM_ID.into()];
    vm_ids.extend(extra.iter().map(|vm| vm.vm_id.to_string()));
    let mut jobs = Vec::new();
    for vm_id in &vm_ids[..3] {
        jobs.push(start_test(&http, &g1.url(), vm_id).await);
    }
    harness::eventually(WITHIN, "steps run", || async {
        (!running_steps(&stack).await.is_empty()).then_some(())
    })
    .await;

    // Replica 1 dies mid-work; replica 2 takes the requests.
    g1.proc.kill9().await;
    let in_flight = unfinished_jobs(&stack).await;
    assert!(!in_flight.is_empty());
    for vm_id in &vm_ids[3..5] {
        jobs.push(start_test(&http, &g2.url(), vm_id).await);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    g1.proc.restart().await;
    g1.ready().await;

    // Then replica 2.
    harness::eventually(WITHIN, "steps run", || async {
        (!running_steps(&stack).await.is_empty()).then_some(())
    })
    .await;
    g2.proc.kill9().await;
    jobs.push(start_test(&http, &g1.url(), &vm_ids[5]).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    g2.proc.restart().await;
    g2.ready().await;

    for job_id in &jobs {
        let job = stack.wait_terminal(job_id, WITHIN).await;
        assert_eq!(job["status"], "completed", "{job:#}");
    }
    for job_id in &in_flight {
        assert!(jobs.contains(job_id), "{job_id}");
    }
    // Each auto-cleanup fires once, whichever replica is alive when it is due.
    for job_id in &jobs {
        let job = stack
            .wait_for(job_id, WITHIN, |j| j["cleanup_job_id"].is_string())
            .await;
        let cleanup = stack
            .wait_terminal(job["cleanup_job_id"].as_str().unwrap(), WITHIN)
            .await;
        assert_eq!(cleanup["status"], "completed", "{cleanup:#}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cleanups: Vec<(String, i64)> = sqlx::query_as(
        "SELECT parent_job_id, count(*) FROM failover_jobs WHERE job_type = 'cleanup' GROUP BY parent_job_id",
    )
    .fetch_all(&stack.pool)
    .await
    .unwrap();
    assert_eq!(cleanups.len(), jobs.len(), "{cleanups:?}");
    assert!(
        cleanups.iter().all(|(_, n)| *n == 1),
        "one cleanup per test failover: {cleanups:?}"
    );
    assert_eq!(stack.footprint(), before, "every cleanup left nothing");

    let (unpublished,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&stack.pool)
            .await
            .unwrap();
    assert_eq!(unpublished, 0, "the relay resumed and published everything");
    let twice: Vec<(String, String, i32, i64)> = sqlx::query_as(
        "SELECT job_id, operation, (details->>'attempt')::int AS attempt, count(*) FROM job_tracking
         WHERE operation LIKE 'step.%' AND status = 'running'
         GROUP BY 1, 2, 3 HAVING count(*) > 1",
    )
    .fetch_all(&stack.pool)
    .await
    .unwrap();
    assert!(
        twice.is_empty(),
        "a step attempt was claimed twice: {twice:?}"
    );
    // The lease timer runs on both replicas; an expiry takes effect once.
    let expired_twice: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT job_id, operation, error_message, count(*) FROM job_tracking
         WHERE error_message LIKE '%lease of attempt%' GROUP BY 1, 2, 3 HAVING count(*) > 1",
    )
    .fetch_all(&stack.pool)
    .await
    .unwrap();
    assert!(
        expired_twice.is_empty(),
        "a lease expiry took effect twice: {expired_twice:?}"
    );

    drop((w1, w2));
    g1.proc.kill9().await;
    g2.proc.kill9().await;
    stack.stop().await;
}
