//! Authentication, injected faults, retries, and the creates that must not
//! be repeated blindly.

mod cloudstack_support;

use std::time::Duration;

use chrono::Utc;
use cloudstack_support::*;
use failover_platform::cloudstack_signature::{EXPIRES_FORMAT, java_url_encode, sign};
use serde_json::json;
use step_worker::cloudstack::{CloudStackError, JobStatus, VmState, decode_response};

fn vms_with_id(vms: &[serde_json::Value], id: &str) -> usize {
    vms.iter().filter(|v| v["id"] == id).count()
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_401() {
    let h = start().await;
    let client = h.client_with(&settings(&h.base, DEFAULT_API_KEY, "not-the-secret"));
    let err = client.list_zones().await.expect_err("bad signature");
    assert!(err.is_unauthorized(), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(err.error_text(), Some(simulators::cloudstack::AUTH_TEXT));
    let client = h.client_with(&settings(&h.base, "unknown-key", DEFAULT_SECRET_KEY));
    assert!(
        client
            .list_zones()
            .await
            .expect_err("unknown key")
            .is_unauthorized()
    );
    // The secret never shows in the client's debug output.
    assert!(!format!("{:?}", h.client).contains(DEFAULT_SECRET_KEY));
}

/// Signs `listZones` by hand with `expires` and sends it.
async fn list_zones_expiring(
    h: &Harness,
    expires: chrono::DateTime<Utc>,
) -> Result<serde_json::Value, CloudStackError> {
    let expires = expires.format(EXPIRES_FORMAT).to_string();
    let params = [
        ("apikey", DEFAULT_API_KEY),
        ("command", "listZones"),
        ("expires", expires.as_str()),
        ("response", "json"),
        ("signatureversion", "3"),
    ];
    let signature = sign(params, DEFAULT_SECRET_KEY);
    let mut query: Vec<String> = params
        .iter()
        .map(|(n, v)| format!("{n}={}", java_url_encode(v)))
        .collect();
    query.push(format!("signature={}", java_url_encode(&signature)));
    let url = format!("{}client/api?{}", h.base, query.join("&"));
    let resp = h.http.get(url).send().await.expect("send");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.expect("body");
    decode_response("listZones", status, &body)
}

#[tokio::test]
async fn an_expired_request_is_refused_with_401() {
    let h = start().await;
    let fresh = list_zones_expiring(&h, Utc::now() + chrono::Duration::minutes(5)).await;
    assert_eq!(fresh.expect("a fresh request passes")["count"], 1);
    let err = list_zones_expiring(&h, Utc::now() - chrono::Duration::seconds(1))
        .await
        .expect_err("expired");
    assert!(err.is_unauthorized(), "{err}");
}

#[tokio::test]
async fn a_failed_async_job_is_a_typed_error() {
    let h = start().await;
    let vm = h
        .client
        .deploy_vm(&deploy_request("doomed", false))
        .await
        .expect("deploy");
    h.fault(json!({ "operation": "startVirtualMachine", "fail_async_job": true, "remaining": 1 }))
        .await;
    let err = h.client.start_vm(&vm.id).await.expect_err("job fails");
    let CloudStackError::AsyncJobFailed {
        job_id, error_code, ..
    } = &err
    else {
        panic!("expected AsyncJobFailed, got {err}");
    };
    assert_eq!(*error_code, 530);
    let job = h.client.query_async_job(job_id).await.expect("job");
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(job.job_result_code, Some(530));
    let vm = h.client.get_vm(&vm.id).await.expect("lookup").expect("vm");
    assert_eq!(vm.state(), Some(&VmState::Stopped), "rolled back");
    h.client
        .start_vm(&vm.id)
        .await
        .expect("the fault is used up");
}

#[tokio::test]
async fn a_failed_deploy_leaves_an_unusable_vm_under_its_custom_id() {
    let h = start().await;
    let request = deploy_request("broken", true);
    h.fault(json!({ "operation": "deployVirtualMachine", "fail_async_job": true, "remaining": 1 }))
        .await;
    let err = h.client.deploy_vm(&request).await.expect_err("job fails");
    assert_eq!(err.error_code(), Some(530));
    let err = h
        .client
        .deploy_vm(&request)
        .await
        .expect_err("the vm is in Error");
    assert!(
        matches!(err, CloudStackError::DeployedVmUnusable { ref state, .. } if state == "Error"),
        "{err}"
    );
    assert_eq!(
        vms_with_id(&h.vms().await, &request.custom_id.to_string()),
        1
    );
}

#[tokio::test]
async fn a_retried_deploy_with_the_same_custom_id_makes_one_vm() {
    let h = start().await;
    let before = h.vms().await.len();
    let request = deploy_request("once", false);
    let first = h.client.deploy_vm(&request).await.expect("first");
    let second = h.client.deploy_vm(&request).await.expect("second");
    assert_eq!(first.id, second.id);

    // Two attempts racing: both look first and find nothing (the creates
    // are held back), one creates, the other gets 431 "already exists" and
    // returns the same VM.
    h.fault(json!({ "operation": "deployVirtualMachine", "latency_ms": 100, "remaining": 2 }))
        .await;
    let racing = deploy_request("racing", true);
    let (a, b) = tokio::join!(h.client.deploy_vm(&racing), h.client.deploy_vm(&racing));
    let (a, b) = (a.expect("a"), b.expect("b"));
    assert_eq!(a.id, b.id);
    assert_eq!(a.state(), Some(&VmState::Running));
    assert_eq!(
        b.state(),
        Some(&VmState::Running),
        "waited for the other attempt"
    );

    let vms = h.vms().await;
    assert_eq!(vms.len(), before + 2);
    assert_eq!(vms_with_id(&vms, &racing.custom_id.to_string()), 1);
    let jobs = h.state().await["async_jobs"].clone();
    let deploys = jobs
        .as_array()
        .expect("jobs")
        .iter()
        .filter(|j| j["command"] == "deployVirtualMachine")
        .count();
    assert_eq!(deploys, 2, "one create per vm reached the server");
}

#[tokio::test]
async fn a_deploy_answered_530_is_looked_up_before_it_is_sent_again() {
    let h = start().await;
    let before = h.vms().await.len();
    h.fault(json!({ "operation": "deployVirtualMachine", "failure_rate": 1.0, "remaining": 1 }))
        .await;
    let request = deploy_request("flaky", false);
    let vm = h
        .client
        .deploy_vm(&request)
        .await
        .expect("sent again after the lookup");
    let vms = h.vms().await;
    assert_eq!(vms.len(), before + 1);
    assert_eq!(vms_with_id(&vms, &vm.id), 1);

    h.fault(json!({ "operation": "deployVirtualMachine", "failure_rate": 1.0 }))
        .await;
    let request = deploy_request("never", false);
    let err = h.client.deploy_vm(&request).await.expect_err("always 530");
    assert!(
        matches!(
            err,
            CloudStackError::Api {
                http_status: 530,
                error_code: 530,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_ambiguous());
    let vms = h.vms().await;
    assert_eq!(vms.len(), before + 1, "nothing created, nothing duplicated");
    assert_eq!(vms_with_id(&vms, &request.custom_id.to_string()), 0);
}

#[tokio::test]
async fn reads_are_retried_after_5xx_and_429() {
    let h = start().await;
    h.fault(json!({ "operation": "listZones", "failure_rate": 1.0, "failure_status": 503, "remaining": 2 }))
        .await;
    h.fault(json!({ "operation": "listNetworks", "failure_rate": 1.0, "failure_status": 429, "remaining": 1 }))
        .await;
    assert_eq!(h.client.list_zones().await.expect("third try").len(), 1);
    assert_eq!(
        h.client
            .list_networks(None)
            .await
            .expect("second try")
            .len(),
        4
    );

    h.fault(json!({ "operation": "listZones", "failure_rate": 1.0, "failure_status": 503 }))
        .await;
    let err = h.client.list_zones().await.expect_err("retries run out");
    assert!(
        matches!(
            err,
            CloudStackError::Api {
                http_status: 503,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_hanging_call_times_out() {
    let h = start().await;
    h.fault(json!({ "operation": "listServiceOfferings", "hang": true }))
        .await;
    let mut settings = h.settings();
    settings.request_timeout = Duration::from_millis(200);
    settings.max_retries = 1;
    let client = h.client_with(&settings);
    let err = client.list_service_offerings().await.expect_err("hangs");
    assert!(matches!(err, CloudStackError::Timeout { .. }), "{err}");
    assert!(err.is_retryable() && err.is_ambiguous());
}

#[tokio::test]
async fn an_async_job_outliving_the_deadline_keeps_its_job_id() {
    let h = start().await;
    let vm = h
        .client
        .deploy_vm(&deploy_request("slow", false))
        .await
        .expect("deploy");
    h.set_job_ms(5_000).await;
    let mut settings = h.settings();
    settings.async_job_deadline = Duration::from_millis(300);
    let client = h.client_with(&settings);
    let started = std::time::Instant::now();
    let err = client.start_vm(&vm.id).await.expect_err("deadline");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by the deadline"
    );
    let CloudStackError::AsyncJobDeadline { job_id, .. } = &err else {
        panic!("expected AsyncJobDeadline, got {err}");
    };
    assert!(err.is_retryable());
    let job = client
        .query_async_job(job_id)
        .await
        .expect("job still known");
    assert_eq!(job.status(), JobStatus::Pending);
    let vm = client.get_vm(&vm.id).await.expect("lookup").expect("vm");
    assert_eq!(vm.state(), Some(&VmState::Starting));
}

#[tokio::test]
async fn long_requests_go_as_a_post_form() {
    let h = start().await;
    let mut request = deploy_request("big-details", false);
    for i in 0..200 {
        request.details.insert(format!("key{i:03}"), "x".repeat(20));
    }
    let vm = h
        .client
        .deploy_vm(&request)
        .await
        .expect("deploy with a long request");
    assert_eq!(vm.details.len(), 200);
    assert_eq!(vm.details["key007"], "x".repeat(20));
}
