//! Several gateway replicas relay the outbox without publishing a row twice,
//! and the gRPC status service answers by job id, by correlation id and with
//! the list filters.

mod common;

use std::time::Duration;

use serde_json::json;

use common::{LINUX_VM_ID, Stack, WIN_VM_ID};
use failover_proto::v1 as pb;
use failover_proto::v1::job_status_client::JobStatusClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_the_work_and_publish_each_dispatch_once() {
    let mut stack = Stack::start().await;
    stack.register_demo_vms().await;
    let second = stack.start_gateway_replica().await;
    stack.start_worker();
    stack.start_worker();

    let first_job = stack
        .start_failover(
            "test",
            json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app"}),
        )
        .await;
    let answer: serde_json::Value = stack
        .http
        .post(format!("{second}/api/v1/failover/test"))
        .json(&json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second_job = answer["job_id"].as_str().unwrap().to_owned();
    for job_id in [&first_job, &second_job] {
        let job = stack.wait_terminal(job_id, Duration::from_secs(60)).await;
        assert_eq!(job["status"], "completed", "{job:#}");
    }
    let rows: Vec<(String, String, i32, i32)> = sqlx::query_as(
        "SELECT job_id, step_name, attempt, publish_attempts FROM outbox WHERE published_at IS NOT NULL",
    )
    .fetch_all(&stack.pool)
    .await
    .unwrap();
    // 6 steps of the Windows job, 6 of the Linux job (its skip is decided by the worker).
    assert_eq!(rows.len(), 12, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.3 == 1),
        "a row was published twice: {rows:?}"
    );
    let (unpublished,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&stack.pool)
            .await
            .unwrap();
    assert_eq!(unpublished, 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_status_answers_by_job_id_correlation_id_and_filters() {
    let mut stack = Stack::start().await;
    stack.register_demo_vms().await;
    stack.start_worker();
    let (status, accepted) = stack
        .post(
            "/api/v1/failover/test",
            &json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}),
        )
        .await;
    assert_eq!(status, 202);
    let job_id = accepted["job_id"].as_str().unwrap().to_owned();
    let correlation_id = accepted["data"]["correlation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    stack.wait_terminal(&job_id, Duration::from_secs(60)).await;

    let mut client = JobStatusClient::connect(stack.grpc_url.clone())
        .await
        .unwrap();
    let by_id = client
        .get_job(pb::GetJobRequest {
            key: Some(pb::get_job_request::Key::JobId(job_id.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id.status, "completed");
    assert_eq!(by_id.correlation_id, correlation_id);
    assert_eq!(by_id.steps.len(), 6);
    assert_eq!(by_id.steps[2].step_name, "virtio-injection");
    assert_eq!(by_id.steps[2].status, "skipped");
    assert!(by_id.completed_at.is_some());
    assert!(!by_id.destination_vm_id.is_empty());

    let by_correlation = client
        .get_job(pb::GetJobRequest {
            key: Some(pb::get_job_request::Key::CorrelationId(
                correlation_id.clone(),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_correlation.job_id, job_id);

    let missing = client
        .get_job(pb::GetJobRequest {
            key: Some(pb::get_job_request::Key::JobId("no-such-job".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(missing.message().starts_with("JOB_NOT_FOUND"));

    let listed = client
        .list_jobs(pb::ListJobsRequest {
            status: "completed".into(),
            job_type: "test".into(),
            vm_id: LINUX_VM_ID.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total, 1);
    assert_eq!(listed.jobs[0].job_id, job_id);
    let none = client
        .list_jobs(pb::ListJobsRequest {
            job_type: "live".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(none.total, 0);
    let bad = client
        .list_jobs(pb::ListJobsRequest {
            status: "bogus".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    stack.stop().await;
}
