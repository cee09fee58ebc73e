//! Outages of the shared services, one test binary so that nothing else
//! runs while they happen, and one scenario at a time (a lock):
//!
//! - RabbitMQ stopped and started again: requests are accepted meanwhile
//!   (the outbox holds their steps), a step in flight finishes and reports,
//!   a message waiting in a durable queue survives, workers and relay
//!   reconnect by themselves with backoff — and promptly again after the
//!   next outage — and nothing is lost;
//! - Postgres restarted: requests during the outage get a 503 in the error
//!   envelope and leave no half-written job; the gateway process recovers
//!   without help;
//! - RabbitMQ's consumer timeout shorter than a virt-customize run: the
//!   message is acked right after the claim, so the run completes under
//!   its first attempt and the broker never takes the message back.
//!
//! Every outage is a guard that restarts the service even when the test
//! fails.

mod common;
mod harness;

use std::path::Path;
use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use common::{AMQP_URL, LINUX_VM_ID, Stack, WIN_VM_ID, workspace_bin};
use failover_core::pipeline::StepName;
use failover_platform::queue::{self, ConfirmedPublisher, OutgoingMessage, StepTopology};
use harness::processes::{Proc, free_addr, gateway_env, worker_env};
use harness::services::{BrokerOutage, BrokerSetting, PostgresOutage, queue_depths};
use harness::tap::Tap;
use harness::{eventually, seed};
use simulators::virt_customize_standin::ControlFile;

/// One outage at a time.
static OUTAGE: Mutex<()> = Mutex::const_new(());

const WITHIN: Duration = Duration::from_secs(90);

fn step<'a>(job: &'a Value, name: &str) -> &'a Value {
    job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {job:#}"))
}

async fn job(stack: &Stack, job_id: &str) -> Value {
    stack
        .get(&format!("/api/v1/failover/jobs/{job_id}"))
        .await
        .1["data"]
        .clone()
}

async fn unpublished(stack: &Stack, job_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE job_id = $1 AND published_at IS NULL")
        .bind(job_id)
        .fetch_one(&stack.pool)
        .await
        .unwrap()
}

/// A worker process for `steps`, reporting to the gateway at `grpc`.
fn worker(stack: &Stack, grpc: &str, id: &str, steps: &[StepName], logs: &Path) -> Proc {
    let mut env = worker_env(&stack.settings, grpc, id);
    let names: Vec<&str> = steps.iter().map(|s| s.as_str()).collect();
    env.push((
        "FAILOVER_WORKER__STEPS".into(),
        format!("[{}]", names.join(", ")),
    ));
    Proc::start(id, workspace_bin("step-worker"), Vec::new(), env, logs)
}

/// The `retry_in_ms` of the first line with `message` in `log` after `offset`.
fn first_retry_after(log: &str, offset: usize, message: &str) -> Option<u64> {
    log[offset..]
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == message)
        .and_then(|line| line["retry_in_ms"].as_u64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_stopped_and_started_again_loses_nothing() {
    let _one_at_a_time = OUTAGE.lock().await;
    let mut stack = Stack::start().await;
    // Gateway and workers as processes, whose logs tell their backoff.
    stack.stop_gateway(0).await;
    let logs = tempfile::tempdir().unwrap();
    let (rest, grpc) = (free_addr(), free_addr());
    let mut gateway = Proc::start(
        "gateway",
        workspace_bin("api-gateway"),
        Vec::new(),
        gateway_env(&stack.settings, rest, grpc),
        logs.path(),
    );
    stack.base_url = format!("http://{rest}");
    let grpc = format!("http://{grpc}");
    gateway
        .wait_http_ok(&format!("{}/health/ready", stack.base_url), WITHIN)
        .await;
    stack.register_demo_vms().await;
    let cs = seed::base_of(&stack.settings.cloudstack.endpoint);
    let ls = seed::base_of(&stack.settings.linstor.endpoint);
    let extra = seed::seed_vms(&stack.http, &cs, &ls, stack.disks.path(), "mq", 3, 10).await;
    for vm in &extra {
        seed::register(&stack.http, &stack.base_url, vm).await;
    }
    let prefix = stack.settings.amqp.prefix.clone();
    let topology = StepTopology::new(&stack.settings.amqp);
    ControlFile {
        duration_ms: Some(3_000),
        ..Default::default()
    }
    .write_beside(&stack.disk_path("win2019-app-disk0.raw"))
    .unwrap();

    // No worker takes validation yet: this job's first step waits in its
    // durable queue through the outage.
    let all_but_validation: Vec<StepName> = StepName::ALL
        .into_iter()
        .filter(|s| *s != StepName::Validation)
        .collect();
    let first = worker(
        &stack,
        &grpc,
        "no-validation",
        &all_but_validation,
        logs.path(),
    );
    let waiting = stack
        .start_failover("test", json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
        .await;
    let validation_queue = topology.queue(StepName::Validation);
    eventually(WITHIN, "the validation task is in its queue", || async {
        queue_depths(&prefix)
            .iter()
            .any(|(name, ready, _)| *name == validation_queue && *ready == 1)
            .then_some(())
    })
    .await;
    let in_flight = stack
        .start_failover(
            "test",
            json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app", "skip_validation": true}),
        )
        .await;
    stack
        .wait_for(&in_flight, WITHIN, |j| {
            step(j, "virtio-injection")["status"] == "running"
        })
        .await;

    let outage = BrokerOutage::begin();
    let mut accepted = Vec::new();
    for (vm, skip_validation) in extra[..2].iter().zip([true, false]) {
        let (status, body) = stack
            .post(
                "/api/v1/failover/test",
                &json!({"vm_id": vm.vm_id, "vm_name": vm.name, "skip_validation": skip_validation}),
            )
            .await;
        assert_eq!(status, 202, "accepted while the broker is down: {body}");
        accepted.push(body["job_id"].as_str().unwrap().to_owned());
    }
    // The step in flight finishes and reports over gRPC; what follows it
    // waits in the outbox with the new jobs' first steps.
    let during = stack
        .wait_for(&in_flight, WITHIN, |j| {
            step(j, "virtio-injection")["status"] == "completed"
        })
        .await;
    assert_eq!(step(&during, "virtio-injection")["attempt"], 1);
    for job_id in accepted.iter().chain([&in_flight]) {
        assert!(
            unpublished(&stack, job_id).await >= 1,
            "{job_id}: its next step waits in the outbox"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    outage.end();

    // Relay and workers reconnect by themselves.
    let mut second = worker(&stack, &grpc, "all-steps", &StepName::ALL, logs.path());
    for job_id in accepted.iter().chain([&in_flight, &waiting]) {
        let job = stack.wait_terminal(job_id, WITHIN).await;
        assert_eq!(job["status"], "completed", "{job:#}");
    }
    let waited = job(&stack, &waiting).await;
    assert_eq!(step(&waited, "validation")["attempt"], 1);
    let (published_once,): (i32,) = sqlx::query_as(
        "SELECT publish_attempts FROM outbox WHERE job_id = $1 AND step_name = 'validation'",
    )
    .bind(&waiting)
    .fetch_one(&stack.pool)
    .await
    .unwrap();
    assert_eq!(
        published_once, 1,
        "the broker kept the message; it was not published again"
    );
    let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    assert_eq!(stack.destination_vms().len(), 4, "one VM per job");

    // A second outage: relay and worker went through the first one, and
    // their backoff starts afresh, because the connection between worked.
    // The first worker may still sleep the longest backoff of the first
    // outage: the second one begins once it consumes again.
    eventually(WITHIN, "the first worker consumes again", || async {
        (first.log_text().matches("consuming step queues").count() >= 2).then_some(())
    })
    .await;
    eventually(WITHIN, "the relay is connected again", || async {
        (gateway.log_text().matches("outbox relay connected").count() >= 2).then_some(())
    })
    .await;
    second.kill9().await;
    let (gateway_mark, worker_mark) = (gateway.log_text().len(), first.log_text().len());
    let outage = BrokerOutage::begin();
    tokio::time::sleep(Duration::from_secs(1)).await;
    outage.end();
    let after = stack
        .start_failover(
            "test",
            json!({"vm_id": extra[2].vm_id, "vm_name": extra[2].name, "skip_validation": true}),
        )
        .await;
    let job = stack.wait_terminal(&after, WITHIN).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(
        first_retry_after(&first.log_text(), worker_mark, "broker session ended"),
        Some(200),
        "the worker's first retry:\n{}",
        first.log_tail(20)
    );
    assert_eq!(
        first_retry_after(
            &gateway.log_text(),
            gateway_mark,
            "outbox relay interrupted"
        ),
        Some(200),
        "the relay's first retry:\n{}",
        gateway.log_tail(20)
    );
    drop(first);
    gateway.kill9().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_answers_503_meanwhile_and_resumes_without_help() {
    let _one_at_a_time = OUTAGE.lock().await;
    let mut stack = Stack::start().await;
    // The gateway as a real process, with the product's pool settings.
    stack.stop_gateway(0).await;
    let logs = tempfile::tempdir().unwrap();
    let (rest, grpc) = (free_addr(), free_addr());
    let mut gateway = Proc::start(
        "gateway",
        workspace_bin("api-gateway"),
        Vec::new(),
        gateway_env(&stack.settings, rest, grpc),
        logs.path(),
    );
    stack.base_url = format!("http://{rest}");
    gateway
        .wait_http_ok(&format!("{}/health/ready", stack.base_url), WITHIN)
        .await;
    let _worker = Proc::start(
        "worker",
        workspace_bin("step-worker"),
        Vec::new(),
        worker_env(&stack.settings, &format!("http://{grpc}"), "worker"),
        logs.path(),
    );
    stack.register_demo_vms().await;
    ControlFile {
        duration_ms: Some(3_000),
        ..Default::default()
    }
    .write_beside(&stack.disk_path("win2019-app-disk0.raw"))
    .unwrap();
    let in_flight = stack
        .start_failover(
            "test",
            json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app"}),
        )
        .await;
    stack
        .wait_for(&in_flight, WITHIN, |j| {
            step(j, "virtio-injection")["status"] == "running"
        })
        .await;

    let outage = PostgresOutage::begin();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let requests = [
        (
            "POST",
            "/api/v1/failover/test",
            json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}),
        ),
        (
            "POST",
            "/api/v1/failover/live",
            json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}),
        ),
        (
            "GET",
            &format!("/api/v1/failover/jobs/{in_flight}"),
            json!(null),
        ),
        ("GET", "/api/v1/failover/jobs", json!(null)),
    ];
    for (method, path, body) in &requests {
        let started = std::time::Instant::now();
        let url = format!("{}{path}", stack.base_url);
        let request = match *method {
            "POST" => http.post(url).json(body),
            _ => http.get(url),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, 503, "{method} {path}: {answer}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{method} {path} answered in {:?}",
            started.elapsed()
        );
        assert_eq!(answer["success"], false, "{answer}");
        assert_eq!(answer["error_code"], "SERVICE_UNAVAILABLE", "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("database"),
            "{answer}"
        );
        assert!(
            uuid::Uuid::parse_str(answer["details"]["correlation_id"].as_str().unwrap()).is_ok(),
            "{answer}"
        );
        assert!(
            answer["troubleshooting"]["suggestions"].is_array(),
            "{answer}"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    outage.end();

    gateway
        .wait_http_ok(&format!("{}/health/ready", stack.base_url), WITHIN)
        .await;
    let done = stack.wait_terminal(&in_flight, WITHIN).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    let jobs: Vec<(String,)> = sqlx::query_as("SELECT job_id FROM failover_jobs")
        .fetch_all(&stack.pool)
        .await
        .unwrap();
    assert_eq!(
        jobs,
        vec![(in_flight.clone(),)],
        "the refused requests wrote nothing"
    );
    let (orphans,): (i64,) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM failover_job_steps WHERE job_id <> $1)
              + (SELECT count(*) FROM outbox WHERE job_id <> $1)
              + (SELECT count(*) FROM job_tracking WHERE job_id <> $1)",
    )
    .bind(&in_flight)
    .fetch_one(&stack.pool)
    .await
    .unwrap();
    assert_eq!(orphans, 0, "no half-written job");
    let next = stack
        .start_failover("test", json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
        .await;
    assert_eq!(
        stack.wait_terminal(&next, WITHIN).await["status"],
        "completed"
    );
    gateway.kill9().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_virt_customize_run_longer_than_the_broker_consumer_timeout_completes() {
    let _one_at_a_time = OUTAGE.lock().await;
    // Channels opened from now on lose a delivery they hold unacked for
    // more than 2 s (checked every 500 ms).
    let _timeout = BrokerSetting::set("consumer_timeout", "2000");
    let _tick = BrokerSetting::set("channel_tick_interval", "500");
    let stack = Stack::start().await;
    stack.register_demo_vms().await;
    let topology = StepTopology::new(&stack.settings.amqp);

    // The control: a consumer that holds a message unacked loses its channel.
    let connection = queue::connect(AMQP_URL, "consumer-timeout-control")
        .await
        .unwrap();
    let publisher = ConfirmedPublisher::new(&connection).await.unwrap();
    topology
        .declare(publisher.channel(), &StepName::ALL)
        .await
        .unwrap();
    let scratch = format!("{}.consumer-timeout-control", stack.settings.amqp.prefix);
    let holder = connection.create_channel().await.unwrap();
    holder
        .queue_declare(
            scratch.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    publisher
        .publish(OutgoingMessage {
            exchange: "",
            routing_key: &scratch,
            payload: b"held",
            message_id: "held",
            headers: Vec::new(),
        })
        .await
        .unwrap();
    let mut held = holder
        .basic_consume(
            scratch.as_str().into(),
            "holder".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let delivery = held.next().await.unwrap().unwrap();
    assert_eq!(delivery.data, b"held");
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if !holder.status().connected() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the broker enforces the 2 s consumer timeout on this machine"
    );
    let _ = connection.close(200, "done".into()).await;

    // The real worker, through a tap that counts claims, runs an 8 s
    // virt-customize.
    let shutdown = CancellationToken::new();
    let (tap, tap_url) = Tap::start(&stack.grpc_url, shutdown.clone()).await;
    let logs = tempfile::tempdir().unwrap();
    let worker = Proc::start(
        "worker",
        workspace_bin("step-worker"),
        Vec::new(),
        worker_env(&stack.settings, &tap_url, "worker"),
        logs.path(),
    );
    ControlFile {
        duration_ms: Some(8_000),
        ..Default::default()
    }
    .write_beside(&stack.disk_path("win2019-app-disk0.raw"))
    .unwrap();
    let job_id = stack
        .start_failover(
            "test",
            json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app"}),
        )
        .await;
    stack
        .wait_for(&job_id, WITHIN, |j| {
            step(j, "virtio-injection")["status"] == "running"
        })
        .await;
    let virtio_queue = topology.queue(StepName::VirtioInjection);
    for _ in 0..4 {
        let depths = queue_depths(&stack.settings.amqp.prefix);
        let (_, ready, unacked) = depths
            .iter()
            .find(|(name, _, _)| *name == virtio_queue)
            .unwrap();
        assert_eq!(
            (*ready, *unacked),
            (0, 0),
            "no message is held while the step runs"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let job = stack.wait_terminal(&job_id, WITHIN).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(step(&job, "virtio-injection")["attempt"], 1);
    let claims = tap.calls_for("claim", &job_id, "virtio-injection");
    assert_eq!(claims.len(), 1, "delivered once: {claims:?}");
    let log = worker.log_text();
    assert!(
        !log.contains("broker session ended"),
        "the worker's channel was never closed:\n{}",
        worker.log_tail(20)
    );
    drop(worker);
    shutdown.cancel();
    stack.stop().await;
}
