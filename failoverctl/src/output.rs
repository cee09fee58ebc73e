//! What failoverctl prints: job summaries, the job and VM tables, accepted
//! answers, and the exit code of an outcome.

use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde_json::Value;

/// How failoverctl ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The job completed, or the command did what it was asked.
    Success,
    Failed,
    Cancelled,
    /// Usage, configuration, connection error, or a refused request.
    Error,
    /// Ctrl-C while following a job (the job goes on).
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failed => 1,
            Exit::Cancelled => 2,
            Exit::Error => 3,
            Exit::Interrupted => 130,
        }
    }

    /// The exit of a job that has ended with `status`; `None` while it runs.
    pub fn of_job(status: &str) -> Option<Exit> {
        match status {
            "completed" => Some(Exit::Success),
            "failed" => Some(Exit::Failed),
            "cancelled" => Some(Exit::Cancelled),
            _ => None,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

pub fn is_terminal(status: &str) -> bool {
    Exit::of_job(status).is_some()
}

pub fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

fn time(v: &Value, key: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(v[key].as_str()?).ok()
}

/// `completed_at - start` as `1m 5s`; `None` until both are known.
fn took(v: &Value, start_key: &str) -> Option<String> {
    let seconds = (time(v, "completed_at")? - time(v, start_key)?)
        .num_seconds()
        .max(0);
    Some(humantime::format_duration(Duration::from_secs(seconds.unsigned_abs())).to_string())
}

/// `test failover`, `live failover`, `cleanup`.
fn kind(job: &Value) -> String {
    match text(job, "job_type") {
        "cleanup" => "cleanup".to_owned(),
        other => format!("{other} failover"),
    }
}

/// The summary of a job as `GET /api/v1/failover/jobs/{id}` returns it
/// (its `data`): outcome, ids, error, what is left behind, the steps.
pub fn job_summary(job: &Value) -> String {
    let id = text(job, "job_id");
    let status = text(job, "status");
    let mut out = format!(
        "{} of {} ({}): {status}",
        kind(job),
        text(job, "vm_name"),
        text(job, "vm_id")
    );
    if is_terminal(status) {
        let start = if job["started_at"].is_string() {
            "started_at"
        } else {
            "created_at"
        };
        if let Some(took) = took(job, start) {
            out.push_str(&format!(" in {took}"));
        }
    } else if let Some(step) = job["current_step"].as_str() {
        out.push_str(&format!(" (step {step})"));
    }
    out.push('\n');
    let mut field = |name: &str, value: String| out.push_str(&format!("  {name:<12} {value}\n"));
    field("job", id.to_owned());
    field("correlation", text(job, "correlation_id").to_owned());
    if let Some(vm) = job["destination_vm_id"].as_str() {
        field("destination", format!("VM {vm}"));
    }
    if let Some(snapshot) = job["linstor_snapshot_name"].as_str() {
        field("snapshot", snapshot.to_owned());
    }
    if let Some(waiting) = job["waiting_for"].as_str() {
        field("waiting for", format!("job {waiting} of the same VM"));
    }
    if let Some(code) = job["error_code"].as_str() {
        let at = job["error_step"]
            .as_str()
            .map(|s| format!(" at {s}"))
            .unwrap_or_default();
        field(
            "error",
            format!("{code}{at}: {}", text(job, "error_message")),
        );
    }
    for left in job["left_behind"].as_array().into_iter().flatten() {
        field(
            "left behind",
            format!("{} ({})", text(left, "resource"), text(left, "why")),
        );
    }
    if let Some(test) = job["test_job_id"].as_str() {
        field("cleans up", format!("job {test}"));
    }
    if let Some(cleanup) = job["cleanup_job_id"].as_str() {
        field("cleanup", format!("job {cleanup}"));
    } else if let Some(at) = job["auto_cleanup_at"].as_str() {
        field("cleanup", format!("automatic at {at}"));
    }
    if let Some(hint) = next_step(job) {
        field("next", hint);
    }
    out.push_str("  steps\n");
    let steps: Vec<&Value> = job["steps"].as_array().into_iter().flatten().collect();
    let width = steps
        .iter()
        .map(|s| text(s, "step_name").len())
        .max()
        .unwrap_or_default();
    for step in steps {
        let attempt = match step["attempt"].as_i64().unwrap_or_default() {
            0 => String::new(),
            n => format!("attempt {n}"),
        };
        let mut line = format!(
            "    {:<width$}  {:<9}  {:>7}  {attempt:<9}",
            text(step, "step_name"),
            text(step, "status"),
            took(step, "started_at").unwrap_or_else(|| "-".into()),
        );
        let error = &step["error"];
        let detail = if error.is_object() {
            format!(
                "{}: {}",
                text(error, "error_code"),
                text(error, "error_message")
            )
        } else if step["message"] == step["status"] {
            String::new()
        } else {
            text(step, "message").to_owned()
        };
        if !detail.is_empty() {
            line.push_str("  ");
            line.push_str(&detail);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// What the operator can do next, when there is an obvious next step.
fn next_step(job: &Value) -> Option<String> {
    let id = text(job, "job_id");
    let status = text(job, "status");
    let holds_vm = job["holds_vm"].as_bool().unwrap_or_default();
    let kept = job["rollback_on_failure"] == Value::Bool(false);
    let cleaned = job["cleanup_job_id"].is_string() || job["auto_cleanup_at"].is_string();
    match status {
        "failed" if holds_vm && kept && !cleaned => Some(format!(
            "fix the cause, then `failoverctl retry {id}`; or undo it with `failoverctl cleanup {id}`"
        )),
        "completed" if text(job, "job_type") == "test" && !cleaned => {
            Some(format!("`failoverctl cleanup {id}` when the test is over"))
        }
        _ => None,
    }
}

/// Left-aligned columns, the last one unpadded.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The answer of `GET /api/v1/failover/jobs` as a table.
pub fn jobs_table(body: &Value) -> String {
    let jobs: Vec<&Value> = body["data"].as_array().into_iter().flatten().collect();
    if jobs.is_empty() {
        return "no jobs\n".to_owned();
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            let detail = job["error_code"]
                .as_str()
                .or_else(|| job["current_step"].as_str())
                .unwrap_or_default();
            vec![
                text(job, "status").to_owned(),
                text(job, "job_type").to_owned(),
                text(job, "vm_name").to_owned(),
                text(job, "created_at").to_owned(),
                detail.to_owned(),
                text(job, "job_id").to_owned(),
            ]
        })
        .collect();
    let mut out = table(
        &["STATUS", "TYPE", "VM", "CREATED", "STEP/ERROR", "JOB"],
        &rows,
    );
    out.push_str(&format!(
        "{} of {} job(s)\n",
        jobs.len(),
        body["total"].as_i64().unwrap_or(jobs.len() as i64)
    ));
    out
}

/// The answer of `GET /api/v1/vms` as a table.
pub fn vms_table(body: &Value) -> String {
    let vms: Vec<&Value> = body["data"].as_array().into_iter().flatten().collect();
    if vms.is_empty() {
        return "no VMs in the inventory\n".to_owned();
    }
    let rows: Vec<Vec<String>> = vms
        .iter()
        .map(|vm| {
            vec![
                text(vm, "vm_id").to_owned(),
                text(vm, "vm_name").to_owned(),
                text(vm, "os_family").to_owned(),
                vm["cpu_count"].as_u64().unwrap_or_default().to_string(),
                format!("{} MiB", vm["memory_mb"].as_u64().unwrap_or_default()),
                vm["disks"].as_array().map_or(0, Vec::len).to_string(),
                text(vm, "replication_state").to_owned(),
            ]
        })
        .collect();
    table(
        &[
            "VM ID",
            "NAME",
            "OS",
            "CPUS",
            "MEMORY",
            "DISKS",
            "REPLICATION",
        ],
        &rows,
    )
}

/// The accepted answer of a start, cleanup, cancel or retry, for a person.
pub fn accepted(body: &Value) -> String {
    let data = &body["data"];
    let mut out = format!("{}\n", text(body, "message"));
    out.push_str(&format!("  job          {}\n", text(body, "job_id")));
    if let Some(cid) = data["correlation_id"].as_str() {
        out.push_str(&format!("  correlation  {cid}\n"));
    }
    if let Some(waiting) = data["waiting_for"].as_str() {
        out.push_str(&format!(
            "  waiting for  job {waiting} of the same VM to finish\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn exit_codes_follow_the_outcome() {
        assert_eq!(Exit::of_job("completed"), Some(Exit::Success));
        assert_eq!(Exit::of_job("failed"), Some(Exit::Failed));
        assert_eq!(Exit::of_job("cancelled"), Some(Exit::Cancelled));
        for running in [
            "pending",
            "validating",
            "executing",
            "compensating",
            "cancelling",
        ] {
            assert_eq!(Exit::of_job(running), None, "{running}");
        }
        let codes: Vec<u8> = [
            Exit::Success,
            Exit::Failed,
            Exit::Cancelled,
            Exit::Error,
            Exit::Interrupted,
        ]
        .map(Exit::code)
        .to_vec();
        assert_eq!(codes, vec![0, 1, 2, 3, 130]);
    }

    fn step(name: &str, status: &str, secs: (u32, u32), message: &str) -> Value {
        json!({
            "step_name": name, "status": status, "attempt": 1, "progress": 100,
            "message": message, "error": null, "log": null,
            "started_at": format!("2026-05-01T10:00:{:02}Z", secs.0),
            "completed_at": format!("2026-05-01T10:00:{:02}Z", secs.1),
        })
    }

    fn completed_job() -> Value {
        json!({
            "job_id": "enhanced-test-failover-4205a1b2-3c4d-4e6f-8a8b-9c0d1e2f3a4b-1795729387",
            "vm_id": "4205a1b2-3c4d-4e6f-8a8b-9c0d1e2f3a4b",
            "vm_name": "win2019-app",
            "job_type": "test",
            "status": "completed",
            "current_step": null,
            "correlation_id": "8d38bf26-1b7a-4c36-9d7e-0f4b2f9e3a11",
            "destination_vm_id": "1092cdfb-0a4e-4f0e-9d55-3f1f4c1b2a77",
            "linstor_snapshot_name": "test-4205a1b2-1795729387",
            "error_code": null, "error_message": null, "error_step": null,
            "created_at": "2026-05-01T10:00:00Z",
            "started_at": "2026-05-01T10:00:01Z",
            "completed_at": "2026-05-01T10:00:10Z",
            "rollback_on_failure": true, "holds_vm": true,
            "cleanup_job_id": null, "auto_cleanup_at": null, "left_behind": [],
            "steps": [
                step("validation", "completed", (1, 2), "all checks passed"),
                step("snapshot", "completed", (2, 2), "2 snapshot(s) test-4205a1b2-1795729387"),
                step("virtio-injection", "completed", (2, 4), "drivers injected"),
                step("test-vm-creation", "completed", (4, 6), ""),
                step("volume-attachment", "completed", (6, 8), "2 volume(s)"),
                step("test-vm-startup", "completed", (8, 10), "VM running with 1 NIC(s)"),
            ]
        })
    }

    #[test]
    fn a_completed_test_is_summarised() {
        let text = job_summary(&completed_job());
        let expected = "\
test failover of win2019-app (4205a1b2-3c4d-4e6f-8a8b-9c0d1e2f3a4b): completed in 9s
  job          enhanced-test-failover-4205a1b2-3c4d-4e6f-8a8b-9c0d1e2f3a4b-1795729387
  correlation  8d38bf26-1b7a-4c36-9d7e-0f4b2f9e3a11
  destination  VM 1092cdfb-0a4e-4f0e-9d55-3f1f4c1b2a77
  snapshot     test-4205a1b2-1795729387
  next         `failoverctl cleanup enhanced-test-failover-4205a1b2-3c4d-4e6f-8a8b-9c0d1e2f3a4b-1795729387` when the test is over
  steps
    validation         completed       1s  attempt 1  all checks passed
    snapshot           completed       0s  attempt 1  2 snapshot(s) test-4205a1b2-1795729387
    virtio-injection   completed       2s  attempt 1  drivers injected
    test-vm-creation   completed       2s  attempt 1
    volume-attachment  completed       2s  attempt 1  2 volume(s)
    test-vm-startup    completed       2s  attempt 1  VM running with 1 NIC(s)
";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_failure_shows_its_code_step_and_what_is_left() {
        let mut job = completed_job();
        job["status"] = json!("failed");
        job["destination_vm_id"] = json!(null);
        job["error_code"] = json!("VM_CREATE_FAILED");
        job["error_step"] = json!("test-vm-creation");
        job["error_message"] = json!("deployVirtualMachine failed: 530 injected");
        job["rollback_on_failure"] = json!(false);
        job["left_behind"] = json!([{"resource": "LINSTOR snapshot test-4205a1b2-1795729387 of every disk",
                                      "why": "the job kept its state for a retry"}]);
        job["steps"][3] = json!({
            "step_name": "test-vm-creation", "status": "failed", "attempt": 3, "progress": 0,
            "message": "creating", "log": null,
            "error": {"error_code": "VM_CREATE_FAILED", "error_message": "deployVirtualMachine failed: 530 injected"},
            "started_at": "2026-05-01T10:00:04Z", "completed_at": "2026-05-01T10:00:07Z"
        });
        for i in [4, 5] {
            job["steps"][i]["status"] = json!("cancelled");
            job["steps"][i]["started_at"] = json!(null);
            job["steps"][i]["message"] = json!("cancelled");
            job["steps"][i]["attempt"] = json!(0);
        }
        let text = job_summary(&job);
        assert!(
            text.starts_with("test failover of win2019-app (4205a1b2-3c4d-4e6f-8a8b-9c0d1e2f3a4b): failed in 9s\n"),
            "{text}"
        );
        assert!(text.contains("  error        VM_CREATE_FAILED at test-vm-creation: deployVirtualMachine failed: 530 injected\n"), "{text}");
        assert!(text.contains("  left behind  LINSTOR snapshot test-4205a1b2-1795729387 of every disk (the job kept its state for a retry)\n"), "{text}");
        assert!(
            text.contains("`failoverctl retry enhanced-test-failover-"),
            "{text}"
        );
        assert!(text.contains("    test-vm-creation   failed          3s  attempt 3  VM_CREATE_FAILED: deployVirtualMachine failed: 530 injected\n"), "{text}");
        assert!(
            text.contains("    test-vm-startup    cancelled        -\n"),
            "a step that never ran shows no attempt and no echo of its status: {text}"
        );
        assert!(!text.contains("destination"), "{text}");
    }

    #[test]
    fn a_running_job_shows_its_step() {
        let mut job = completed_job();
        job["status"] = json!("executing");
        job["current_step"] = json!("volume-attachment");
        job["completed_at"] = json!(null);
        let text = job_summary(&job);
        assert!(
            text.starts_with("test failover of win2019-app (4205a1b2-3c4d-4e6f-8a8b-9c0d1e2f3a4b): executing (step volume-attachment)\n"),
            "{text}"
        );
    }

    #[test]
    fn jobs_and_vms_are_tables() {
        let body = json!({"success": true, "total": 7, "data": [
            {"job_id": "enhanced-test-failover-a-1", "job_type": "test", "status": "failed", "vm_name": "pgtest1",
             "created_at": "2026-05-01T10:00:00Z", "error_code": "VM_CREATE_FAILED", "current_step": null},
            {"job_id": "enhanced-live-failover-b-2", "job_type": "live", "status": "executing", "vm_name": "web01",
             "created_at": "2026-05-01T10:01:00Z", "error_code": null, "current_step": "vm-creation"}
        ]});
        assert_eq!(
            jobs_table(&body),
            "\
STATUS     TYPE  VM       CREATED               STEP/ERROR        JOB
failed     test  pgtest1  2026-05-01T10:00:00Z  VM_CREATE_FAILED  enhanced-test-failover-a-1
executing  live  web01    2026-05-01T10:01:00Z  vm-creation       enhanced-live-failover-b-2
2 of 7 job(s)
"
        );
        assert_eq!(jobs_table(&json!({"data": []})), "no jobs\n");
        let vms = json!({"data": [{"vm_id": "420570c7-f61f-a930-77c5-1e876786cb3c", "vm_name": "pgtest1",
            "os_family": "linux", "cpu_count": 1, "memory_mb": 1024, "replication_state": "replicated",
            "disks": [{}]}]});
        assert_eq!(
            vms_table(&vms),
            "\
VM ID                                 NAME     OS     CPUS  MEMORY    DISKS  REPLICATION
420570c7-f61f-a930-77c5-1e876786cb3c  pgtest1  linux  1     1024 MiB  1      replicated
"
        );
    }

    #[test]
    fn an_accepted_answer_names_the_job() {
        let body = json!({"success": true, "message": "Live failover initiated successfully",
            "job_id": "enhanced-live-failover-x-1",
            "data": {"correlation_id": "c-1", "status": "pending", "waiting_for": "enhanced-test-failover-x-0"}});
        assert_eq!(
            accepted(&body),
            "\
Live failover initiated successfully
  job          enhanced-live-failover-x-1
  correlation  c-1
  waiting for  job enhanced-test-failover-x-0 of the same VM to finish
"
        );
    }
}
