//! failoverctl end to end: the operator's CLI, as a process, drives
//! failovers against a whole stack and reports their outcome in its JSON
//! output, its summaries and its exit code.

mod common;

use std::time::Duration;

use serde_json::Value;

use common::{LINUX_VM_ID, Stack, WIN_VM_ID, workspace_bin};
use simulators::faults::FaultRule;

const TEST_STEPS: [&str; 6] = [
    "validation",
    "snapshot",
    "virtio-injection",
    "test-vm-creation",
    "volume-attachment",
    "test-vm-startup",
];

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Runs failoverctl pointed at `stack` through the environment, with no
/// config file to find.
async fn failoverctl(stack: &Stack, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(workspace_bin("failoverctl"));
    command
        .args(args)
        .env("HOME", stack.disks.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("FAILOVERCTL_CONFIG")
        .env_remove("FAILOVERCTL_TOKEN")
        .env("FAILOVERCTL_API_URL", &stack.base_url)
        .env("FAILOVERCTL_GRPC_URL", &stack.grpc_url)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .unwrap_or_else(|_| panic!("failoverctl {args:?} did not finish in 120s"))
        .unwrap();
    Run {
        code: output.status.code().expect("failoverctl exited"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn fault(operation: &str) -> FaultRule {
    FaultRule {
        operation: operation.into(),
        latency_ms: 0,
        failure_rate: 1.0,
        failure_status: None,
        hang: false,
        fail_async_job: false,
        remaining: None,
    }
}

fn step_names(job: &Value) -> Vec<&str> {
    job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step_name"].as_str().unwrap())
        .collect()
}

fn job_ids(list: &Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_failovers_through_the_cli_complete_with_json_output_and_exit_code_0() {
    let mut stack = Stack::start().await;
    stack.register_demo_vms().await;
    stack.start_worker();
    stack.start_worker();

    // Flags win over the environment, which points nowhere here.
    let mut command = tokio::process::Command::new(workspace_bin("failoverctl"));
    command
        .args(["test", WIN_VM_ID, "--output", "json"])
        .args(["--api-url", &stack.base_url, "--grpc-url", &stack.grpc_url])
        .env("HOME", stack.disks.path())
        .env("FAILOVERCTL_API_URL", "http://127.0.0.1:9")
        .env("FAILOVERCTL_GRPC_URL", "http://127.0.0.1:9")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the failover ends in time")
        .unwrap();
    let run = Run {
        code: output.status.code().unwrap(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    };
    assert_eq!(run.code, 0, "{run:#?}");
    let answer = run.json();
    assert_eq!(answer["success"], true);
    let job = &answer["data"];
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["vm_id"], WIN_VM_ID);
    assert_eq!(
        job["vm_name"], "win2019-app",
        "the name comes from the inventory"
    );
    assert_eq!(step_names(job), TEST_STEPS);
    for step in job["steps"].as_array().unwrap() {
        assert_eq!(step["status"], "completed", "{step:#}");
    }
    assert!(job["destination_vm_id"].is_string(), "{job:#}");
    let win_job = job["job_id"].as_str().unwrap().to_owned();

    // By name, without waiting; then followed by `watch`, whose output is
    // not a terminal here: one line per transition, then the summary.
    stack
        .cloudstack
        .set_async_job_duration(Duration::from_millis(300));
    let run = failoverctl(&stack, &["test", "pgtest1", "--no-wait", "-o", "json"]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    let accepted = run.json();
    assert_eq!(accepted["data"]["vm_id"], LINUX_VM_ID, "{accepted:#}");
    assert_eq!(accepted["data"]["status"], "pending");
    let linux_job = accepted["job_id"].as_str().unwrap().to_owned();
    let run = failoverctl(&stack, &["watch", &linux_job]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout.starts_with(&format!(
            "following test failover of pgtest1 (job {linux_job})"
        )),
        "{run:#?}"
    );
    let transition = run
        .stdout
        .lines()
        .find(|l| l.contains(" test-vm-startup ") && l.contains(" completed "))
        .unwrap_or_else(|| panic!("no line for the last step: {run:#?}"));
    assert!(transition.contains("attempt 1 100%"), "{transition}");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains(" job ") && l.contains(" completed")),
        "{run:#?}"
    );
    assert!(
        run.stdout.contains(&format!(
            "test failover of pgtest1 ({LINUX_VM_ID}): completed in "
        )),
        "{run:#?}"
    );
    assert!(run.stdout.contains("\n  steps\n"), "{run:#?}");

    let run = failoverctl(&stack, &["jobs", "--type", "test", "--output", "json"]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    let list = run.json();
    assert_eq!(list["total"], 2, "{list:#}");
    let mut ids = job_ids(&list);
    ids.sort_unstable();
    let mut expected = vec![win_job.as_str(), linux_job.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    let run = failoverctl(&stack, &["jobs", "--vm", "pgtest1", "-o", "json"]).await;
    assert_eq!(job_ids(&run.json()), vec![linux_job.as_str()], "{run:#?}");

    let run = failoverctl(&stack, &["jobs"]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.starts_with("STATUS "), "{run:#?}");
    assert!(run.stdout.contains(&win_job) && run.stdout.contains("2 of 2 job(s)"));

    let run = failoverctl(&stack, &["show", &win_job]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout.starts_with(&format!(
            "test failover of win2019-app ({WIN_VM_ID}): completed in "
        )),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .contains(&format!("failoverctl cleanup {win_job}"))
    );

    let run = failoverctl(&stack, &["vms", "-o", "json"]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json()["total"], 2);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_failover_exits_1_with_its_error_code_and_refusals_exit_3() {
    let mut stack = Stack::start().await;
    stack.register_demo_vms().await;
    stack.start_worker();
    stack
        .cloudstack
        .faults()
        .add(fault("deployVirtualMachine"))
        .unwrap();

    let run = failoverctl(&stack, &["test", "win2019-app", "--output", "json"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    let job = run.json()["data"].clone();
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["error_code"], "VM_CREATE_FAILED", "{job:#}");
    assert_eq!(job["error_step"], "test-vm-creation");
    let job_id = job["job_id"].as_str().unwrap().to_owned();

    // Watching a finished job shows it and exits with its outcome.
    let run = failoverctl(&stack, &["watch", &job_id]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stdout.starts_with(&format!(
            "test failover of win2019-app ({WIN_VM_ID}): failed in "
        )),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .contains("  error        VM_CREATE_FAILED at test-vm-creation: "),
        "{run:#?}"
    );
    let run = failoverctl(&stack, &["watch", &job_id, "-o", "json"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.json()["data"]["error_code"], "VM_CREATE_FAILED");

    let run = failoverctl(&stack, &["jobs", "--status", "failed", "-o", "json"]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(job_ids(&run.json()), vec![job_id.as_str()]);

    // Refused requests and usage errors: 3, with the API's envelope.
    let ghost = "00000000-0000-4000-8000-000000000000";
    let run = failoverctl(&stack, &["test", ghost, "--vm-name", "ghost", "-o", "json"]).await;
    assert_eq!(run.code, 3, "{run:#?}");
    assert_eq!(run.json()["error_code"], "VM_NOT_FOUND", "{run:#?}");
    assert!(run.stderr.contains("(VM_NOT_FOUND, HTTP 404)"), "{run:#?}");
    let run = failoverctl(&stack, &["test", ghost]).await;
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(run.stderr.contains("VM_NOT_FOUND"), "{run:#?}");
    let run = failoverctl(&stack, &["live", "no-such-vm"]).await;
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stderr.contains("no VM named \"no-such-vm\""),
        "{run:#?}"
    );
    let run = failoverctl(&stack, &["show", "enhanced-test-failover-nope"]).await;
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(run.stderr.contains("JOB_NOT_FOUND"), "{run:#?}");
    let run = failoverctl(&stack, &["test", WIN_VM_ID, "--test-duration", "soon"]).await;
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(run.stderr.contains("INVALID_REQUEST"), "{run:#?}");
    assert!(run.stderr.contains("  problems:\n"), "{run:#?}");
    let run = failoverctl(&stack, &["frobnicate"]).await;
    assert_eq!(run.code, 3, "{run:#?}");
    let run = failoverctl(&stack, &["--api-url", "http://127.0.0.1:9", "vms"]).await;
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(run.stderr.contains("cannot reach the API"), "{run:#?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kept_failure_is_retried_then_cleaned_up_through_the_cli() {
    let mut stack = Stack::start().await;
    stack.register_demo_vms().await;
    stack.start_worker();
    stack
        .cloudstack
        .faults()
        .add(FaultRule {
            failure_status: Some(431),
            remaining: Some(1),
            ..fault("startVirtualMachine")
        })
        .unwrap();

    let run = failoverctl(&stack, &["test", WIN_VM_ID, "--keep-state"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stdout
            .contains(" error        VM_START_FAILED at test-vm-startup: "),
        "{run:#?}"
    );
    let job_id = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("  job          "))
        .unwrap_or_else(|| panic!("no job line: {run:#?}"))
        .to_owned();
    assert!(
        run.stdout
            .contains(&format!("`failoverctl retry {job_id}`")),
        "{run:#?}"
    );
    assert_eq!(
        stack.destination_vms().len(),
        1,
        "the partial state is kept"
    );

    let run = failoverctl(&stack, &["retry", &job_id, "-o", "json"]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    let job = run.json()["data"].clone();
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["job_id"], job_id.as_str());
    let startup = &job["steps"][5];
    assert_eq!(startup["step_name"], "test-vm-startup");
    assert_eq!(startup["attempt"], 2, "{startup:#}");

    let run = failoverctl(&stack, &["cleanup", &job_id, "-o", "json"]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    let cleanup = run.json()["data"].clone();
    assert_eq!(cleanup["job_type"], "cleanup", "{cleanup:#}");
    assert_eq!(cleanup["status"], "completed", "{cleanup:#}");
    assert_eq!(cleanup["test_job_id"], job_id.as_str());
    assert!(stack.destination_vms().is_empty(), "the test VM is gone");
    stack.stop().await;
}
