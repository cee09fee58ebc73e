//! One trace per job: a test failover, started with a caller's
//! `traceparent`, yields one OpenTelemetry trace — the REST request, the
//! gateway's transitions, the outbox publishes, both workers' steps, their
//! gRPC claims and reports, every call to the CloudStack and LINSTOR
//! simulators and the virt-customize run — received by an in-process OTLP
//! collector, every span naming the job.
//!
//! Telemetry is process-wide: this binary holds this one test, which
//! installs the exporter once and shares it between the gateway and the
//! in-process workers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use common::{Stack, WIN_VM_ID};
use failover_platform::config::{LogFormat, LogSettings, TelemetrySettings};
use failover_platform::telemetry;

/// One received span, flattened.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    trace_id: String,
    name: String,
    kind: SpanKind,
    attributes: BTreeMap<String, String>,
}

impl ReceivedSpan {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The OTLP trace service, keeping every span it is sent.
#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

fn text(value: Option<AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s,
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(kv.value.clone().and_then(|v| v.value)))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push(ReceivedSpan {
                        service: service.clone(),
                        trace_id: hex::encode(&span.trace_id),
                        kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                        name: span.name,
                        attributes: span
                            .attributes
                            .into_iter()
                            .map(|kv| (kv.key, text(kv.value.and_then(|v| v.value))))
                            .collect(),
                    });
                }
            }
        }
        self.spans.lock().unwrap().extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn start_collector() -> (Collector, String) {
    let collector = Collector::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (collector, format!("http://{addr}"))
}

/// The spans of `trace_id` received so far.
fn spans_of(collector: &Collector, trace_id: &str) -> Vec<ReceivedSpan> {
    collector
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .cloned()
        .collect()
}

const PIPELINE: [&str; 6] = [
    "validation",
    "snapshot",
    "virtio-injection",
    "test-vm-creation",
    "volume-attachment",
    "test-vm-startup",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_test_failover_is_one_trace_across_gateway_workers_and_simulators() {
    let (collector, endpoint) = start_collector().await;
    let telemetry = telemetry::init_with_tracing(
        &LogSettings {
            format: LogFormat::Human,
            level: "warn".into(),
        },
        &TelemetrySettings {
            otlp_endpoint: Some(endpoint),
            service_name: "failover-trace-test".into(),
            sampling_ratio: 1.0,
        },
        "api-gateway",
    )
    .expect("telemetry installs once in this process");
    assert!(telemetry.exporting());

    let mut stack = Stack::start().await;
    stack.register_demo_vms().await;
    // Two workers that split the pipeline, so both take part in the job.
    stack
        .start_worker_with(|s| {
            s.worker.steps = PIPELINE[..3].iter().map(|s| s.to_string()).collect()
        })
        .await;
    stack
        .start_worker_with(|s| {
            s.worker.steps = PIPELINE[3..].iter().map(|s| s.to_string()).collect()
        })
        .await;

    // The caller's trace, which the whole job must join.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let caller_span = "00f067aa0ba902b7";
    let response = stack
        .http
        .post(format!("{}/api/v1/failover/test", stack.base_url))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let answer: serde_json::Value = response.json().await.unwrap();
    let job_id = answer["job_id"].as_str().unwrap().to_owned();
    let correlation_id = answer["data"]["correlation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = stack.wait_terminal(&job_id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "completed", "{job:#}");

    // Every span of the job reaches the collector (the last reports end a
    // moment after the job does).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        tokio::task::block_in_place(|| telemetry.flush());
        let spans = spans_of(&collector, &trace_id);
        // The last step's report ends the gateway's part, its consumer span
        // (closed once the report returned) the worker's.
        let last = |name: &str, kind: SpanKind| {
            spans.iter().any(|s| {
                s.name == name && s.kind == kind && s.attr("step") == Some("test-vm-startup")
            })
        };
        let complete = last("failover.v1.StepCoordination/ReportStep", SpanKind::Server)
            && last("step test-vm-startup", SpanKind::Consumer);
        if complete || tokio::time::Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let names: BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert!(!spans.is_empty(), "nothing of trace {trace_id} arrived");

    // Nothing of the job left its trace: every span that names the job is
    // in the caller's trace.
    let all = collector.spans.lock().unwrap().clone();
    let strays: Vec<_> = all
        .iter()
        .filter(|s| s.attr("job_id") == Some(job_id.as_str()) && s.trace_id != trace_id)
        .map(|s| (&s.name, &s.trace_id))
        .collect();
    assert!(
        strays.is_empty(),
        "spans of the job in other traces: {strays:?}"
    );

    // Every span of the trace names the job, its correlation id and its VM.
    for span in &spans {
        assert_eq!(span.service, "failover-trace-test");
        assert_eq!(span.attr("job_id"), Some(job_id.as_str()), "{span:?}");
        assert_eq!(
            span.attr("correlation_id"),
            Some(correlation_id.as_str()),
            "{span:?}"
        );
        assert_eq!(span.attr("vm_id"), Some(WIN_VM_ID), "{span:?}");
    }

    // The gateway: the request, its transitions, the publishes, the
    // coordination calls it served.
    let request = spans
        .iter()
        .find(|s| s.name == "POST /api/v1/failover/test")
        .unwrap_or_else(|| panic!("no request span in {names:?}"));
    assert_eq!(request.kind, SpanKind::Server);
    assert_eq!(request.attr("http.response.status_code"), Some("202"));
    for name in [
        "transition start",
        "transition claimed",
        "transition succeeded",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    for step in PIPELINE {
        let has = |name: &str, kind: SpanKind| {
            spans
                .iter()
                .any(|s| s.name == name && s.kind == kind && s.attr("step") == Some(step))
        };
        assert!(
            has(&format!("publish {step}"), SpanKind::Producer),
            "no publish of {step} in {names:?}"
        );
        assert!(
            has(&format!("step {step}"), SpanKind::Consumer),
            "no consumption of {step} in {names:?}"
        );
        for call in ["ClaimStep", "ReportStep"] {
            let name = format!("failover.v1.StepCoordination/{call}");
            assert!(
                has(&name, SpanKind::Client),
                "no {call} client span of {step}"
            );
            assert!(
                has(&name, SpanKind::Server),
                "no {call} server span of {step}"
            );
        }
    }

    // Both workers executed steps of the job.
    let workers: BTreeSet<&str> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Consumer)
        .filter_map(|s| s.attr("worker_id"))
        .collect();
    assert_eq!(
        workers,
        BTreeSet::from(["test-worker-1", "test-worker-2"]),
        "the steps' workers"
    );

    // The calls to the simulators, as client spans within their step.
    let client_calls = |system: &str| -> Vec<&ReceivedSpan> {
        spans
            .iter()
            .filter(|s| s.kind == SpanKind::Client && s.attr("peer.service") == Some(system))
            .collect()
    };
    let cloudstack = client_calls("cloudstack");
    let deploy = cloudstack
        .iter()
        .find(|s| s.attr("cloudstack.command") == Some("deployVirtualMachine"))
        .unwrap_or_else(|| panic!("no deployVirtualMachine call in {names:?}"));
    assert_eq!(deploy.attr("step"), Some("test-vm-creation"));
    assert_eq!(deploy.attr("http.response.status_code"), Some("200"));
    for call in &cloudstack {
        // Lookups before a create may answer 431; every call has a status.
        assert!(call.attr("http.request.method").is_some(), "{call:?}");
        assert!(call.attr("http.response.status_code").is_some(), "{call:?}");
        assert!(call.attr("step").is_some(), "{call:?}");
    }
    let linstor = client_calls("linstor");
    let snapshot_create = linstor
        .iter()
        .find(|s| s.attr("linstor.operation") == Some("snapshot-create"))
        .unwrap_or_else(|| panic!("no LINSTOR snapshot call in {names:?}"));
    assert_eq!(snapshot_create.attr("http.request.method"), Some("POST"));
    assert_eq!(snapshot_create.attr("step"), Some("snapshot"));
    assert!(
        snapshot_create
            .attr("url.path")
            .is_some_and(|p| p.ends_with("/snapshots")),
        "{snapshot_create:?}"
    );
    for call in &linstor {
        assert!(call.attr("http.response.status_code").is_some(), "{call:?}");
    }

    // The virt-customize run of the Windows disk.
    assert!(
        spans
            .iter()
            .any(|s| s.name == "virt-customize inject-virtio-win"
                && s.attr("step") == Some("virtio-injection")),
        "no virt-customize span in {names:?}"
    );

    stack.stop().await;
    tokio::task::block_in_place(|| telemetry.shutdown());
}
