//! The Prometheus endpoints of the gateway (`/metrics` on the REST port) and
//! of a worker (its status listener) move when a failover runs; readiness
//! reflects Postgres and RabbitMQ, on REST, on the worker and in the gRPC
//! health service; refused requests are counted.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use common::{LINUX_VM_ID, Stack};

/// The value of the series named exactly `series` (name and labels as the
/// exposition writes them), if it is there.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The sum of every series of `name` whose labels contain all of `labels`.
fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, number) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            (series_name == name && labels.iter().all(|l| series_labels.contains(l)))
                .then(|| number.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

async fn scrape(http: &reqwest::Client, url: &str) -> String {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

/// Polls `url` until `ready` holds for its exposition.
async fn scrape_until(
    http: &reqwest::Client,
    url: &str,
    what: &str,
    ready: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let text = scrape(http, url).await;
        if ready(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never showed at {url}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_and_worker_series_move_when_a_failover_runs() {
    let mut stack = Stack::start().await;
    stack.register_demo_vms().await;
    let worker: SocketAddr = stack.start_worker_with(|_| {}).await;
    let gateway_metrics = format!("{}/metrics", stack.base_url);
    let worker_metrics = format!("http://{worker}/metrics");
    let http = stack.http.clone();

    // Before: the relay is connected, the queues are sampled, nothing ran.
    let before = scrape_until(&http, &gateway_metrics, "the relay's samples", |t| {
        value(t, "failover_relay_connected") == Some(1.0)
            && value(t, "failover_queue_depth{step=\"validation\"}").is_some()
    })
    .await;
    assert_eq!(sum(&before, "failover_jobs_started_total", &[]), 0.0);
    assert_eq!(value(&before, "failover_outbox_backlog"), Some(0.0));
    let worker_before = scrape_until(&http, &worker_metrics, "the worker's connection", |t| {
        value(t, "failover_worker_broker_connected") == Some(1.0)
    })
    .await;
    assert_eq!(
        value(&worker_before, "failover_worker_steps_in_flight"),
        Some(0.0)
    );
    assert_eq!(sum(&worker_before, "failover_worker_steps_total", &[]), 0.0);

    // Readiness: Postgres and RabbitMQ, on REST, the worker and gRPC.
    let (status, ready) = stack.get("/health/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["database"], "ok");
    assert_eq!(ready["broker"], "ok");
    let worker_ready = http
        .get(format!("http://{worker}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(worker_ready.status(), 200);
    let channel = tonic::transport::Endpoint::from_shared(stack.grpc_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "failover.v1.StepCoordination", "failover.v1.JobStatus"] {
        // The health service follows readiness within a timer interval.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let answer = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            if answer.status() == ServingStatus::Serving {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service:?} is {:?}",
                answer.status()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // A test failover of the Linux VM.
    let job_id = stack
        .start_failover("test", json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
        .await;
    let job = stack.wait_terminal(&job_id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "completed", "{job:#}");

    // The gateway counted the job, its duration and every publish.
    let after = scrape(&http, &gateway_metrics).await;
    assert_eq!(
        value(&after, "failover_jobs_started_total{job_type=\"test\"}"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        value(
            &after,
            "failover_jobs_finished_total{job_type=\"test\",outcome=\"completed\"}"
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        value(
            &after,
            "failover_job_duration_seconds_count{job_type=\"test\",outcome=\"completed\"}"
        ),
        Some(1.0),
        "{after}"
    );
    for step in [
        "validation",
        "snapshot",
        "virtio-injection",
        "test-vm-creation",
        "volume-attachment",
        "test-vm-startup",
    ] {
        assert_eq!(
            value(
                &after,
                &format!("failover_outbox_published_total{{step=\"{step}\"}}")
            ),
            Some(1.0),
            "{step}: {after}"
        );
    }
    assert_eq!(sum(&after, "failover_step_lease_expiries_total", &[]), 0.0);
    assert!(value(&after, "failover_outbox_oldest_age_seconds").is_some());

    // The worker counted the steps, their durations, its claims and its
    // calls to CloudStack, LINSTOR and virt-customize (skipped here: a Linux
    // guest), and holds nothing in flight.
    let worker_after = scrape_until(&http, &worker_metrics, "the last step", |t| {
        sum(t, "failover_worker_steps_total", &[]) >= 6.0
    })
    .await;
    assert_eq!(
        sum(
            &worker_after,
            "failover_worker_steps_total",
            &["outcome=\"succeeded\""]
        ),
        5.0,
        "{worker_after}"
    );
    assert_eq!(
        value(
            &worker_after,
            "failover_worker_steps_total{step=\"virtio-injection\",outcome=\"skipped\"}"
        ),
        Some(1.0),
        "{worker_after}"
    );
    assert_eq!(
        sum(
            &worker_after,
            "failover_worker_step_duration_seconds_count",
            &[]
        ),
        6.0
    );
    assert_eq!(
        sum(
            &worker_after,
            "failover_worker_claims_total",
            &["outcome=\"granted\""]
        ),
        6.0
    );
    assert_eq!(
        value(&worker_after, "failover_worker_steps_in_flight"),
        Some(0.0)
    );
    assert!(
        value(
            &worker_after,
            "failover_external_call_duration_seconds_count{system=\"cloudstack\",command=\"deployVirtualMachine\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{worker_after}"
    );
    assert!(
        sum(
            &worker_after,
            "failover_external_call_duration_seconds_count",
            &["system=\"linstor\""]
        ) >= 1.0,
        "{worker_after}"
    );

    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_counted() {
    let stack = Stack::start_with(|s| {
        s.gateway.read_rate_limit_per_minute = 1;
        s.gateway.read_rate_limit_burst = 1;
    })
    .await;
    let (first, _) = stack.get("/api/v1/vms").await;
    assert_eq!(first, 200);
    let (second, body) = stack.get("/api/v1/vms").await;
    assert_eq!(second, 429, "{body}");
    // Scrapes and health checks are never limited.
    for _ in 0..3 {
        let text = scrape(&stack.http, &format!("{}/metrics", stack.base_url)).await;
        assert_eq!(
            value(&text, "failover_rate_limit_refusals_total{class=\"read\"}"),
            Some(1.0),
            "{text}"
        );
    }
    stack.stop().await;
}
