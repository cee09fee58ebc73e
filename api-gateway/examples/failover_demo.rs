//! The demo driver: against a running stack (`scripts/stack up`), runs a test
//! failover of `win2019-app` (Windows, two disks) and `pgtest1` (Linux) and a
//! live failover of `web01`, printing every step as it moves, then a summary.
//!
//! `cargo run -p api-gateway --example failover_demo [-- http://127.0.0.1:8082]`

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const JOBS: [(&str, &str, &str); 3] = [
    (
        "test",
        "4205a1b2-3c4d-4e6f-8a8b-9c0d1e2f3a4b",
        "win2019-app",
    ),
    ("test", "420570c7-f61f-a930-77c5-1e876786cb3c", "pgtest1"),
    ("live", "4205c3d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "web01"),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8082".to_owned());
    let http = reqwest::Client::new();

    let vms: Value = http
        .get(format!("{base}/api/v1/vms"))
        .send()
        .await?
        .json()
        .await?;
    println!("Replicated VMs in the inventory:");
    for vm in vms["data"].as_array().into_iter().flatten() {
        println!(
            "  {}  {:<12} {:<7} {} disk(s)  {}",
            vm["vm_id"].as_str().unwrap_or_default(),
            vm["vm_name"].as_str().unwrap_or_default(),
            vm["os_family"].as_str().unwrap_or_default(),
            vm["disks"].as_array().map_or(0, Vec::len),
            vm["replication_state"].as_str().unwrap_or_default(),
        );
    }
    println!();

    let mut jobs = Vec::new();
    for (kind, vm_id, vm_name) in JOBS {
        let mut body = json!({"vm_id": vm_id, "vm_name": vm_name});
        if kind == "test" {
            body["test_duration"] = json!("30m");
        }
        let response = http
            .post(format!("{base}/api/v1/failover/{kind}"))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let answer: Value = response.json().await?;
        println!("POST /api/v1/failover/{kind} {vm_name} -> {status}");
        println!("{}", serde_json::to_string_pretty(&answer)?);
        anyhow::ensure!(
            status.is_success(),
            "the {kind} failover of {vm_name} was refused"
        );
        jobs.push((
            answer["job_id"].as_str().unwrap_or_default().to_owned(),
            format!("{kind} {vm_name}"),
        ));
    }
    println!();

    let started = Instant::now();
    let mut seen: HashMap<(String, String), String> = HashMap::new();
    let mut finished: HashMap<String, Value> = HashMap::new();
    while finished.len() < jobs.len() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "jobs did not finish within 5 minutes"
        );
        for (job_id, label) in &jobs {
            if finished.contains_key(job_id) {
                continue;
            }
            let detail: Value = http
                .get(format!("{base}/api/v1/failover/jobs/{job_id}"))
                .send()
                .await?
                .json()
                .await?;
            let job = &detail["data"];
            for step in job["steps"].as_array().into_iter().flatten() {
                let name = step["step_name"].as_str().unwrap_or_default().to_owned();
                let line = format!(
                    "{:<10} attempt {} {:>3}%  {}",
                    step["status"].as_str().unwrap_or_default(),
                    step["attempt"],
                    step["progress"],
                    step["error"]["error_message"]
                        .as_str()
                        .or(step["message"].as_str())
                        .unwrap_or_default()
                );
                if step["status"] != "pending"
                    && seen.get(&(job_id.clone(), name.clone())) != Some(&line)
                {
                    println!(
                        "{:>6.1}s  {:<20} {:<18} {line}",
                        started.elapsed().as_secs_f64(),
                        label,
                        name
                    );
                    seen.insert((job_id.clone(), name), line);
                }
            }
            if matches!(job["status"].as_str(), Some("completed" | "failed")) {
                finished.insert(job_id.clone(), job.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    println!("\nSummary:");
    let mut failed = 0;
    for (job_id, label) in &jobs {
        let job = &finished[job_id];
        println!(
            "  {label:<20} {:<9} {job_id}",
            job["status"].as_str().unwrap_or_default()
        );
        println!(
            "  {:<20} destination VM {}  snapshot {}",
            "",
            job["destination_vm_id"].as_str().unwrap_or("-"),
            job["linstor_snapshot_name"].as_str().unwrap_or("-")
        );
        if job["status"] == "failed" {
            failed += 1;
            println!(
                "  {:<20} {}: {}",
                "",
                job["error_code"].as_str().unwrap_or_default(),
                job["error_message"].as_str().unwrap_or_default()
            );
        }
    }
    anyhow::ensure!(failed == 0, "{failed} failover(s) failed");
    Ok(())
}
