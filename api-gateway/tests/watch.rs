//! Live status streams across gateway replicas: a change made by one replica
//! reaches a watcher on another, every recorded transition arrives in order.

mod common;

use std::time::Duration;

use futures::StreamExt as _;
use serde_json::json;

use common::{LINUX_VM_ID, Stack, WIN_VM_ID};
use failover_proto::v1 as pb;
use failover_proto::v1::job_event::Kind;
use failover_proto::v1::job_status_client::JobStatusClient;

/// The job's audit rows after `after`: (id, operation, status).
async fn tracking(stack: &Stack, job_id: &str, after: i64) -> Vec<(i64, String, String)> {
    sqlx::query_as(
        "SELECT id, operation, status FROM job_tracking WHERE job_id = $1 AND id > $2 ORDER BY id",
    )
    .bind(job_id)
    .bind(after)
    .fetch_all(&stack.pool)
    .await
    .unwrap()
}

fn transition_of(event: &pb::JobEvent) -> (i64, String, String) {
    let operation = if event.step_name.is_empty() {
        format!("failover.{}", event.job.as_ref().unwrap().job_type)
    } else {
        format!("step.{}", event.step_name)
    };
    (event.sequence as i64, operation, event.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_job_on_another_replica_receives_every_step_transition_in_order() {
    let mut stack = Stack::start().await;
    stack.register_demo_vms().await;
    stack.start_gateway_replica().await;
    stack.start_worker();
    stack.start_worker();
    // Steps slow enough to watch them move.
    stack
        .cloudstack
        .set_async_job_duration(Duration::from_millis(300));

    let job_id = stack
        .start_failover(
            "test",
            json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app"}),
        )
        .await;
    let mut client = JobStatusClient::connect(stack.grpc_url_of(1))
        .await
        .unwrap();
    let mut stream = client
        .watch_job(pb::GetJobRequest {
            key: Some(pb::get_job_request::Key::JobId(job_id.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(event) = stream.next().await {
            events.push(event.expect("a stream without errors"));
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ends when the job does");

    assert_eq!(events[0].kind, Kind::Snapshot as i32);
    let start = events[0].sequence as i64;
    let transitions: Vec<_> = events
        .iter()
        .filter(|e| e.kind == Kind::Transition as i32)
        .map(transition_of)
        .collect();
    assert_eq!(
        transitions,
        tracking(&stack, &job_id, start).await,
        "every recorded change, in order"
    );
    // Each step moved queued -> running -> completed, as seen on the other replica.
    let last = events.last().unwrap();
    assert_eq!(last.job.as_ref().unwrap().status, "completed");
    for step in ["test-vm-creation", "volume-attachment", "test-vm-startup"] {
        let seen: Vec<&str> = transitions
            .iter()
            .filter(|t| t.1 == format!("step.{step}"))
            .map(|t| t.2.as_str())
            .collect();
        assert_eq!(seen, ["queued", "running", "completed"], "{step}");
    }
    assert!(
        transitions
            .iter()
            .any(|t| t.1 == "failover.test" && t.2 == "completed"),
        "the job's own completion arrives"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_jobs_streams_the_changes_of_every_matching_job() {
    let mut stack = Stack::start().await;
    stack.register_demo_vms().await;
    stack.start_gateway_replica().await;
    stack.start_worker();
    let mut client = JobStatusClient::connect(stack.grpc_url_of(1))
        .await
        .unwrap();
    let mut stream = client
        .watch_jobs(pb::ListJobsRequest {
            job_type: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let tested = stack
        .start_failover("test", json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
        .await;
    let live = stack
        .start_failover(
            "live",
            json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app"}),
        )
        .await;
    let mut events = Vec::new();
    tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(event) = stream.next().await {
            let event = event.unwrap();
            let done =
                event.job_id == tested && event.step_name.is_empty() && event.status == "completed";
            events.push(event);
            if done {
                break;
            }
        }
    })
    .await
    .expect("the test failover completes on the stream");
    assert!(
        events.iter().all(|e| e.job_id == tested),
        "only jobs matching the filter"
    );
    let transitions: Vec<_> = events
        .iter()
        .filter(|e| e.kind == Kind::Transition as i32)
        .map(transition_of)
        .collect();
    let recorded = tracking(&stack, &tested, 0).await;
    // The watcher joined before the job existed, so it saw all of it.
    assert_eq!(transitions, recorded);
    stack.wait_terminal(&live, Duration::from_secs(60)).await;
    stack.stop().await;
}

/// A stream is subscribed before it is answered: a job made right after the
/// call returns arrives as its changes from the first one (`pending`), never
/// folded into a snapshot. Repeated, because the race it guards against was
/// one of timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_answered_before_a_job_exists_sees_the_job_from_its_first_change() {
    let mut stack = Stack::start().await;
    stack.register_demo_vms().await;
    stack.start_gateway_replica().await;
    let mut client = JobStatusClient::connect(stack.grpc_url_of(1))
        .await
        .unwrap();
    for round in 0..8 {
        let correlation_id = uuid::Uuid::new_v4();
        let mut stream = client
            .watch_jobs(pb::ListJobsRequest {
                correlation_id: correlation_id.to_string(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        // No worker runs: the job stays where admission leaves it.
        let answer: serde_json::Value = stack
            .http
            .post(format!("{}/api/v1/failover/test", stack.base_url))
            .header("X-Request-ID", correlation_id.to_string())
            .json(&json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let job_id = answer["job_id"].as_str().unwrap().to_owned();
        let first = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("the job's first change arrives")
            .unwrap()
            .unwrap();
        assert_eq!(first.job_id, job_id, "round {round}");
        assert_eq!(
            (first.kind, first.step_name.as_str(), first.status.as_str()),
            (Kind::Transition as i32, "", "pending"),
            "round {round}: the job's creation, as a change"
        );
        let (first_row, ..) = tracking(&stack, &job_id, 0).await[0].clone();
        assert_eq!(first.sequence as i64, first_row, "round {round}");
        let (status, _) = stack
            .post(
                &format!("/api/v1/failover/jobs/{job_id}/cancel"),
                &json!({}),
            )
            .await;
        assert!(status == 202 || status == 200, "round {round}: {status}");
        stack.wait_terminal(&job_id, Duration::from_secs(20)).await;
    }
    stack.stop().await;
}
