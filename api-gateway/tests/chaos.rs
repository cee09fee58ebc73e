//! The chaos suite: the real binaries as separate processes — two gateway
//! replicas, several workers, the CloudStack and LINSTOR simulators (the
//! workers run the virt-customize stand-in) — on the machine's Postgres and
//! RabbitMQ, with a database and a broker prefix of their own. It drives
//! many failovers (test failovers cleaned up by request or by the
//! auto-cleanup timer, and live failovers) through both replicas while a
//! schedule injects faults: workers killed with SIGKILL or stopped with
//! SIGTERM and started again, a gateway replica killed and started again,
//! simulator faults (errors, latency, hung calls) on and off, and a short
//! RabbitMQ stop. Then it checks, against the database and the simulators'
//! inspection APIs, that every job is terminal, none is lost, nothing exists
//! twice, every cleanup and compensation left nothing behind and the audit
//! trail is complete, and prints one summary line.
//!
//! The size comes from the environment; the defaults are the short run of
//! the test suite (about a minute and a half); the long run:
//!
//! ```text
//! CHAOS_JOBS=300 CHAOS_SECONDS=600 cargo test -p api-gateway --test chaos -- --nocapture
//! ```
//!
//! (`scripts/chaos long` builds the binaries first and runs the same.)
//!
//! `CHAOS_JOBS` jobs to run (a test failover and its cleanup count two,
//! default 40), spread evenly over `CHAOS_SECONDS` (default 60) while the
//! faults go on, `CHAOS_WORKERS`
//! worker processes, `CHAOS_FAULT_EVERY_MS` the pause between two faults,
//! `CHAOS_BROKER=0` to leave RabbitMQ alone. Process logs are kept in
//! `target/chaos/<run>/` when the run fails.

mod common;
mod harness;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection as _;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use common::{ADMIN_DB_URL, AMQP_URL, workspace_bin};
use failover_core::pipeline::StepName;
use failover_platform::Settings;
use failover_platform::config::QueueType;
use failover_platform::queue::StepTopology;
use harness::processes::{Proc, free_addr, gateway_env, worker_env};
use harness::seed::{self, SeededVm};
use harness::services::BrokerOutage;
use simulators::cloudstack as cs_sim;

#[derive(Debug, Clone)]
struct Config {
    jobs: usize,
    seconds: u64,
    workers: usize,
    fault_every: Duration,
    broker: bool,
}

impl Config {
    fn from_env() -> Config {
        fn num(key: &str, default: u64) -> u64 {
            std::env::var(key)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        }
        Config {
            jobs: num("CHAOS_JOBS", 40) as usize,
            seconds: num("CHAOS_SECONDS", 60),
            workers: num("CHAOS_WORKERS", 3).max(2) as usize,
            fault_every: Duration::from_millis(num("CHAOS_FAULT_EVERY_MS", 3000)),
            broker: num("CHAOS_BROKER", 1) != 0,
        }
    }

    /// VMs that run test failovers, one lane each.
    fn lanes(&self) -> usize {
        (self.jobs / 5).clamp(3, 8)
    }

    /// VMs kept for live failovers (each can be failed over live once).
    fn live_vms(&self) -> usize {
        self.jobs / 8 + 1
    }
}

/// A small deterministic generator for the choices of the driver and the
/// fault schedule.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A job the driver was answered 202 for (or saw a timer start).
#[derive(Debug, Clone)]
struct Requested {
    job_id: String,
    job_type: &'static str,
}

#[derive(Debug, Default)]
struct Ledger {
    requested: Vec<Requested>,
    /// Answers with a 5xx status, by path.
    server_errors: Vec<String>,
    /// VMs a lane stopped using because a job of theirs left state behind.
    abandoned_vms: Vec<String>,
}

/// The driver's side: REST calls through whichever replica answers.
#[derive(Debug)]
struct Driver {
    http: reqwest::Client,
    gateways: Vec<String>,
    ledger: Mutex<Ledger>,
    /// Jobs handed out to the lanes so far, of `jobs`.
    issued: AtomicUsize,
    jobs: usize,
    /// The jobs are spread evenly over the run: the n-th starts no earlier
    /// than `start + n * spacing`.
    start: Instant,
    spacing: Duration,
    retried_requests: AtomicUsize,
}

const JOB_DEADLINE: Duration = Duration::from_secs(300);

impl Driver {
    /// Sends the request to the replicas in turn until one answers; a POST
    /// carries an idempotency key, so sending it again is harmless.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut turn = self.retried_requests.load(Ordering::Relaxed);
        loop {
            let base = &self.gateways[turn % self.gateways.len()];
            turn += 1;
            let mut request = self
                .http
                .request(method.clone(), format!("{base}{path}"))
                .timeout(Duration::from_secs(15));
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(key) = key {
                request = request.header("Idempotency-Key", key);
            }
            if let Ok(response) = request.send().await {
                let status = response.status().as_u16();
                if let Ok(value) = response.json::<Value>().await {
                    if status < 500 {
                        return (status, value);
                    }
                    self.ledger
                        .lock()
                        .unwrap()
                        .server_errors
                        .push(format!("{method} {path}: {status} {value}"));
                }
            }
            self.retried_requests.fetch_add(1, Ordering::Relaxed);
            assert!(
                Instant::now() < deadline,
                "no replica answers {method} {path}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn get_job(&self, job_id: &str) -> Value {
        let (status, body) = self
            .send(
                reqwest::Method::GET,
                &format!("/api/v1/failover/jobs/{job_id}"),
                None,
                None,
            )
            .await;
        assert_eq!(status, 200, "{job_id}: {body}");
        body["data"].clone()
    }

    /// Polls the job until `ready` holds for it, or gives up (the final
    /// checks count what never finished).
    async fn wait(&self, job_id: &str, ready: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + JOB_DEADLINE;
        loop {
            let job = self.get_job(job_id).await;
            if ready(&job) {
                return Some(job);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn wait_terminal(&self, job_id: &str) -> Option<Value> {
        self.wait(job_id, |j| {
            matches!(
                j["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
        })
        .await
    }

    fn record(&self, job_id: &str, job_type: &'static str) {
        self.ledger.lock().unwrap().requested.push(Requested {
            job_id: job_id.to_owned(),
            job_type,
        });
    }

    /// Takes `cost` jobs of the budget, if they are left; when to start them.
    fn take_budget(&self, cost: usize) -> Option<Instant> {
        let index = self
            .issued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used + cost <= self.jobs).then_some(used + cost)
            })
            .ok()?;
        Some(self.start + self.spacing * index as u32)
    }

    async fn start(&self, kind: &'static str, body: Value) -> Option<String> {
        let key = Uuid::new_v4().to_string();
        let (status, answer) = self
            .send(
                reqwest::Method::POST,
                &format!("/api/v1/failover/{kind}"),
                Some(&body),
                Some(&key),
            )
            .await;
        assert_eq!(status, 202, "POST {kind} {body}: {answer}");
        let job_id = answer["job_id"].as_str().unwrap().to_owned();
        self.record(&job_id, kind);
        Some(job_id)
    }

    /// A test failover of `vm`, then its cleanup: by request, or by the
    /// auto-cleanup timer. Returns false when the VM cannot be used again.
    async fn test_cycle(&self, vm: &SeededVm, auto_cleanup: bool) -> bool {
        let mut body = json!({"vm_id": vm.vm_id, "vm_name": vm.name});
        if auto_cleanup {
            body["auto_cleanup"] = json!(true);
            body["test_duration"] = json!("1s");
        }
        let Some(job_id) = self.start("test", body).await else {
            return false;
        };
        let Some(job) = self.wait_terminal(&job_id).await else {
            return false;
        };
        if job["status"] != "completed" {
            return job["holds_vm"] == false;
        }
        let cleanup_id = if auto_cleanup {
            let Some(job) = self
                .wait(&job_id, |j| j["cleanup_job_id"].is_string())
                .await
            else {
                return false;
            };
            let id = job["cleanup_job_id"].as_str().unwrap().to_owned();
            self.record(&id, "cleanup");
            id
        } else {
            let key = Uuid::new_v4().to_string();
            let (status, answer) = self
                .send(
                    reqwest::Method::POST,
                    &format!("/api/v1/failover/jobs/{job_id}/cleanup"),
                    Some(&json!({})),
                    Some(&key),
                )
                .await;
            let id = match status {
                202 => answer["job_id"].as_str().unwrap().to_owned(),
                // The first answer was lost with a replica after the
                // cleanup was committed: the job names its cleanup.
                409 => self.get_job(&job_id).await["cleanup_job_id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("cleanup of {job_id} refused: {answer}"))
                    .to_owned(),
                _ => panic!("cleanup of {job_id}: {status} {answer}"),
            };
            self.record(&id, "cleanup");
            id
        };
        match self.wait_terminal(&cleanup_id).await {
            Some(cleanup) => cleanup["status"] == "completed",
            None => false,
        }
    }

    async fn live(&self, vm: &SeededVm) {
        if let Some(job_id) = self
            .start("live", json!({"vm_id": vm.vm_id, "vm_name": vm.name}))
            .await
        {
            self.wait_terminal(&job_id).await;
        }
    }
}

/// One lane: test failovers of its own VM, now and then a live failover
/// of a VM from the shared pool, until the budget or the time is spent.
async fn lane(driver: Arc<Driver>, own: SeededVm, live_pool: Arc<Mutex<Vec<SeededVm>>>, seed: u64) {
    let mut rng = Rng::new(seed);
    loop {
        let live = rng.below(6) == 0;
        let live_vm = if live {
            live_pool.lock().unwrap().pop()
        } else {
            None
        };
        let cost = if live_vm.is_some() { 1 } else { 2 };
        let Some(at) = driver.take_budget(cost) else {
            if let Some(vm) = live_vm {
                live_pool.lock().unwrap().push(vm);
            }
            return;
        };
        tokio::time::sleep_until(at.into()).await;
        match live_vm {
            Some(vm) => driver.live(&vm).await,
            None => {
                if !driver.test_cycle(&own, rng.below(2) == 0).await {
                    driver
                        .ledger
                        .lock()
                        .unwrap()
                        .abandoned_vms
                        .push(own.name.clone());
                    return;
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    WorkerKill9,
    CloudStackErrors,
    GatewayKill9,
    WorkerSigterm,
    LinstorErrors,
    HungCalls,
    SlowBackends,
    BrokerRestart,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::WorkerKill9 => "worker_kill9",
            Fault::WorkerSigterm => "worker_sigterm",
            Fault::GatewayKill9 => "gateway_kill9",
            Fault::CloudStackErrors => "cloudstack_errors",
            Fault::LinstorErrors => "linstor_errors",
            Fault::HungCalls => "hung_calls",
            Fault::SlowBackends => "slow_backends",
            Fault::BrokerRestart => "broker_restart",
        }
    }
}

struct Replica {
    proc: Proc,
    rest: SocketAddr,
}

/// The processes, owned by the fault schedule.
struct Fleet {
    gateways: Vec<Replica>,
    workers: Vec<Proc>,
    cloudstack: String,
    linstor: String,
    http: reqwest::Client,
    /// SIGTERMed workers that did not exit 0 within the grace period.
    unclean_exits: Vec<String>,
}

impl Fleet {
    async fn sim_faults(&self, base: &str, rules: &[Value]) {
        for rule in rules {
            let response = self
                .http
                .post(format!("{base}/sim/faults"))
                .json(rule)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{rule}");
        }
    }

    async fn clear_sim_faults(&self) {
        for base in [&self.cloudstack, &self.linstor] {
            let _ = self.http.delete(format!("{base}/sim/faults")).send().await;
        }
    }

    async fn inject(&mut self, fault: Fault, rng: &mut Rng) {
        match fault {
            Fault::WorkerKill9 => {
                let i = rng.below(self.workers.len());
                self.workers[i].kill9().await;
                tokio::time::sleep(Duration::from_millis(500 + rng.below(1000) as u64)).await;
                self.workers[i].restart().await;
            }
            Fault::WorkerSigterm => {
                let i = rng.below(self.workers.len());
                let worker = &mut self.workers[i];
                worker.sigterm();
                match worker.wait_exit(Duration::from_secs(25)).await {
                    Some(status) if status.success() => {}
                    other => self
                        .unclean_exits
                        .push(format!("{}: {other:?}", worker.name)),
                }
                worker.restart().await;
            }
            Fault::GatewayKill9 => {
                let i = rng.below(self.gateways.len());
                let replica = &mut self.gateways[i];
                replica.proc.kill9().await;
                tokio::time::sleep(Duration::from_millis(1000 + rng.below(1000) as u64)).await;
                replica.proc.restart().await;
                let url = format!("http://{}/health/live", replica.rest);
                replica
                    .proc
                    .wait_http_ok(&url, Duration::from_secs(60))
                    .await;
            }
            Fault::CloudStackErrors => {
                self.sim_faults(
                    &self.cloudstack,
                    &[json!({"operation": "*", "failure_rate": 0.15})],
                )
                .await;
                tokio::time::sleep(Duration::from_secs(4)).await;
                self.clear_sim_faults().await;
            }
            Fault::LinstorErrors => {
                self.sim_faults(
                    &self.linstor,
                    &[json!({"operation": "*", "failure_rate": 0.25})],
                )
                .await;
                tokio::time::sleep(Duration::from_secs(4)).await;
                self.clear_sim_faults().await;
            }
            Fault::HungCalls => {
                self.sim_faults(
                    &self.cloudstack,
                    &[json!({"operation": "queryAsyncJobResult", "hang": true, "remaining": 2})],
                )
                .await;
                self.sim_faults(
                    &self.linstor,
                    &[json!({"operation": "snapshot-list", "hang": true, "remaining": 1})],
                )
                .await;
                tokio::time::sleep(Duration::from_secs(4)).await;
                self.clear_sim_faults().await;
            }
            Fault::SlowBackends => {
                self.sim_faults(
                    &self.cloudstack,
                    &[json!({"operation": "*", "latency_ms": 400})],
                )
                .await;
                self.sim_faults(
                    &self.linstor,
                    &[json!({"operation": "*", "latency_ms": 400})],
                )
                .await;
                tokio::time::sleep(Duration::from_secs(4)).await;
                self.clear_sim_faults().await;
            }
            Fault::BrokerRestart => {
                let outage = tokio::task::spawn_blocking(BrokerOutage::begin)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_secs(3)).await;
                tokio::task::spawn_blocking(move || outage.end())
                    .await
                    .unwrap();
            }
        }
    }

    /// Every process runs again and no simulator fault is left.
    async fn heal(&mut self) {
        self.clear_sim_faults().await;
        for replica in &mut self.gateways {
            if !replica.proc.running() {
                replica.proc.restart().await;
            }
            let url = format!("http://{}/health/live", replica.rest);
            replica
                .proc
                .wait_http_ok(&url, Duration::from_secs(60))
                .await;
        }
        for worker in &mut self.workers {
            if !worker.running() {
                worker.restart().await;
            }
        }
    }
}

/// Injects one fault after another until `stop`; counts them by kind.
async fn fault_schedule(
    mut fleet: Fleet,
    every: Duration,
    broker: bool,
    stop: CancellationToken,
) -> (Fleet, BTreeMap<&'static str, u32>) {
    let mut rotation = vec![
        Fault::WorkerKill9,
        Fault::CloudStackErrors,
        Fault::GatewayKill9,
        Fault::WorkerSigterm,
        Fault::LinstorErrors,
        Fault::HungCalls,
        Fault::WorkerKill9,
        Fault::SlowBackends,
    ];
    if broker {
        // Early in a short run, then once per round.
        rotation.insert(3, Fault::BrokerRestart);
    }
    let mut rng = Rng::new(0x5eed_cafe);
    let mut counts = BTreeMap::new();
    let mut next = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
        let fault = rotation[next % rotation.len()];
        next += 1;
        fleet.inject(fault, &mut rng).await;
        *counts.entry(fault.name()).or_insert(0) += 1;
    }
    fleet.heal().await;
    (fleet, counts)
}

/// What exists at the end, compared with what should.
#[derive(Debug, Default)]
struct Findings {
    lost: Vec<String>,
    duplicated: Vec<String>,
    leaked: Vec<String>,
    audit_gaps: Vec<String>,
}

type JobRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    bool,
    Option<String>,
    Option<f64>,
    Option<String>,
    Uuid,
);

async fn check(
    pool: &PgPool,
    ledger: &Ledger,
    cloudstack: &Value,
    linstor: &Value,
    seeded: &[SeededVm],
    initial_volumes: &BTreeMap<String, (Value, Value)>,
) -> (Findings, Vec<JobRow>) {
    let mut findings = Findings::default();
    let jobs: Vec<JobRow> = sqlx::query_as(
        "SELECT job_id, job_type, status, vm_id::text, destination_vm_id, holds_vm, parent_job_id,
                EXTRACT(EPOCH FROM (completed_at - created_at))::float8, linstor_snapshot_name, correlation_id
         FROM failover_jobs",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let by_id: HashMap<&str, &JobRow> = jobs.iter().map(|j| (j.0.as_str(), j)).collect();

    // Lost: accepted, but missing or never finished.
    let requested: BTreeSet<&str> = ledger.requested.iter().map(|r| r.job_id.as_str()).collect();
    for r in &ledger.requested {
        match by_id.get(r.job_id.as_str()) {
            None => findings
                .lost
                .push(format!("{} {}: not in the database", r.job_type, r.job_id)),
            Some(j) if !matches!(j.2.as_str(), "completed" | "failed" | "cancelled") => findings
                .lost
                .push(format!("{} {}: still {}", r.job_type, r.job_id, j.2)),
            Some(_) => {}
        }
    }
    // Duplicated: a job nobody asked for (a request that made two), a
    // second cleanup of one test failover.
    let mut cleanups_of: BTreeMap<&str, usize> = BTreeMap::new();
    for j in &jobs {
        if let Some(parent) = &j.6 {
            *cleanups_of.entry(parent.as_str()).or_default() += 1;
        }
        if !requested.contains(j.0.as_str()) {
            findings
                .duplicated
                .push(format!("job {} ({}) was never requested", j.0, j.1));
        }
    }
    for (parent, n) in cleanups_of {
        if n > 1 {
            findings
                .duplicated
                .push(format!("{parent} has {n} cleanup jobs"));
        }
    }

    // The audit trail: creation and end of every job, every step outcome
    // and the claim of every attempt that ran.
    let audit: Vec<(String, String, String, Option<i32>, Uuid)> = sqlx::query_as(
        "SELECT job_id, operation, status, (details->>'attempt')::int, correlation_id FROM job_tracking",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let trail: BTreeSet<(&str, &str, &str, Option<i32>)> = audit
        .iter()
        .map(|a| (a.0.as_str(), a.1.as_str(), a.2.as_str(), a.3))
        .collect();
    let has = |job: &str, op: &str, status: &str, attempt: Option<i32>| {
        if attempt.is_some() {
            trail.contains(&(job, op, status, attempt))
        } else {
            trail
                .iter()
                .any(|t| t.0 == job && t.1 == op && t.2 == status)
        }
    };
    for a in &audit {
        if let Some(j) = by_id.get(a.0.as_str())
            && j.9 != a.4
            && !a.1.starts_with("cleanup.")
            && !a.1.starts_with("operator.")
        {
            findings.audit_gaps.push(format!(
                "{} {}: correlation id {} is not the job's",
                a.0, a.1, a.4
            ));
        }
    }
    for j in &jobs {
        let op = format!("failover.{}", j.1);
        if !has(&j.0, &op, "pending", None) {
            findings
                .audit_gaps
                .push(format!("{}: no creation row", j.0));
        }
        if !has(&j.0, &op, &j.2, None) {
            findings
                .audit_gaps
                .push(format!("{}: no row for its end ({})", j.0, j.2));
        }
    }
    let steps: Vec<(String, String, String, i32)> = sqlx::query_as(
        "SELECT job_id, step_name, status, attempt FROM failover_job_steps WHERE status <> 'pending'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for (job, step, status, attempt) in &steps {
        let op = format!("step.{step}");
        if !has(job, &op, status, Some(*attempt)) {
            findings.audit_gaps.push(format!(
                "{job} {step}: no row for {status} (attempt {attempt})"
            ));
        }
        if matches!(status.as_str(), "completed" | "failed" | "skipped")
            && *attempt >= 1
            && !has(job, &op, "running", Some(*attempt))
        {
            findings
                .audit_gaps
                .push(format!("{job} {step}: no claim row for attempt {attempt}"));
        }
    }

    // The simulators. A VM failed over live (its live job completed) runs
    // once, with exactly its disks, and keeps one snapshot of each; every
    // other VM is as it was seeded: disks on the appliance where they were,
    // no snapshot.
    let mut live_done: HashMap<String, &JobRow> = HashMap::new();
    for j in &jobs {
        if j.1 == "live" && j.2 == "completed" && live_done.insert(j.3.clone(), j).is_some() {
            findings
                .duplicated
                .push(format!("VM {} failed over live twice", j.3));
        }
        if matches!(j.2.as_str(), "failed" | "cancelled") && j.5 {
            findings
                .leaked
                .push(format!("{} {} ended {} holding state", j.1, j.0, j.2));
        }
    }
    let vms = cloudstack["vms"].as_array().unwrap();
    let volumes = cloudstack["volumes"].as_array().unwrap();
    let expected_vm_ids: BTreeSet<String> = live_done
        .values()
        .filter_map(|j| j.4.clone())
        .chain([cs_sim::DEMO_APPLIANCE_VM_ID.to_owned()])
        .collect();
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for vm in vms {
        *names.entry(vm["name"].as_str().unwrap()).or_default() += 1;
        let id = vm["id"].as_str().unwrap();
        if !expected_vm_ids.contains(id) {
            findings
                .leaked
                .push(format!("VM {} ({id}) is {}", vm["name"], vm["state"]));
        }
    }
    for (name, n) in names {
        if n > 1 {
            findings.duplicated.push(format!("{n} VMs named {name}"));
        }
    }
    // Deploys that succeeded, per VM name: one per failover.
    let mut deployed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for job in cloudstack["async_jobs"].as_array().unwrap() {
        if job["command"]
            .as_str()
            .is_some_and(|c| c.eq_ignore_ascii_case("deployVirtualMachine"))
            && job["jobstatus"] == 1
        {
            let vm = &job["jobresult"]["virtualmachine"];
            deployed
                .entry(vm["name"].as_str().unwrap_or_default().to_owned())
                .or_default()
                .insert(vm["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    for (name, ids) in &deployed {
        if ids.len() > 1 {
            findings.duplicated.push(format!(
                "{} VMs were deployed as {name}: {ids:?}",
                ids.len()
            ));
        }
    }
    let volume_ids: BTreeSet<&str> = volumes.iter().map(|v| v["id"].as_str().unwrap()).collect();
    let mut attachments: BTreeMap<(String, String), usize> = BTreeMap::new();
    for v in volumes {
        if let (Some(vm), Some(dev)) = (v["virtualmachineid"].as_str(), v["deviceid"].as_u64()) {
            *attachments
                .entry((vm.to_owned(), dev.to_string()))
                .or_default() += 1;
        }
    }
    for ((vm, dev), n) in attachments {
        if n > 1 {
            findings
                .duplicated
                .push(format!("{n} volumes at device {dev} of VM {vm}"));
        }
    }
    let resources = linstor["resource_definitions"].as_array().unwrap();
    let snapshots_of = |rd: &str| -> Vec<String> {
        resources
            .iter()
            .find(|r| {
                r["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(rd))
            })
            .map(|r| {
                r["snapshots"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["name"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let volume = |id: &str| volumes.iter().find(|v| v["id"] == id);
    for vm in seeded {
        let live = live_done.get(&vm.vm_id.to_string());
        for (i, disk) in vm.disks.iter().enumerate() {
            let Some(v) = volume(&disk.volume_id) else {
                findings.leaked.push(format!(
                    "{} {}: volume {} is gone",
                    vm.name, disk.disk_id, disk.volume_id
                ));
                continue;
            };
            let snapshots = snapshots_of(&disk.resource);
            match live {
                Some(job) => {
                    let dest = job.4.as_deref().unwrap_or_default();
                    if v["virtualmachineid"] != dest || (i == 0 && v["deviceid"] != 0) {
                        findings.leaked.push(format!(
                            "{} {}: on {} at {} after its live failover to {dest}",
                            vm.name, disk.disk_id, v["virtualmachineid"], v["deviceid"]
                        ));
                    }
                    let expected = job.8.clone().into_iter().collect::<Vec<_>>();
                    if snapshots.len() > expected.len() {
                        findings
                            .duplicated
                            .push(format!("{}: snapshots {snapshots:?}", disk.resource));
                    } else if snapshots != expected {
                        findings.leaked.push(format!(
                            "{}: snapshots {snapshots:?}, not {expected:?}",
                            disk.resource
                        ));
                    }
                }
                None => {
                    let (vm0, dev0) = &initial_volumes[&disk.volume_id];
                    if &v["virtualmachineid"] != vm0 || &v["deviceid"] != dev0 {
                        findings.leaked.push(format!(
                            "{} {}: on {} at {}, not back on {vm0} at {dev0}",
                            vm.name, disk.disk_id, v["virtualmachineid"], v["deviceid"]
                        ));
                    }
                    if !snapshots.is_empty() {
                        findings
                            .leaked
                            .push(format!("{}: snapshots {snapshots:?} left", disk.resource));
                    }
                }
            }
        }
    }
    // Volumes that exist now and did not before: the template root disks of
    // destination VMs must be gone (replaced by the boot disk).
    for id in volume_ids {
        if !initial_volumes.contains_key(id) {
            let v = volume(id).unwrap();
            findings.leaked.push(format!(
                "volume {id} ({}) on {}",
                v["name"], v["virtualmachineid"]
            ));
        }
    }
    findings.leaked.sort();
    findings.leaked.dedup();
    (findings, jobs)
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) * p).div_ceil(100)]
}

/// Where the run's process logs go; removed when the run passes.
fn run_dir(run: &str) -> PathBuf {
    let target = workspace_bin("api-gateway")
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .to_path_buf();
    let dir = target.join("chaos").join(run);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn drop_database(db_name: &str, prefix: &str) {
    if let Ok(mut admin) = sqlx::PgConnection::connect(ADMIN_DB_URL).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let Ok(conn) = failover_platform::queue::connect(AMQP_URL, "chaos-cleanup").await else {
        return;
    };
    let Ok(channel) = conn.create_channel().await else {
        return;
    };
    let topology = StepTopology::with_prefix(prefix, QueueType::Classic);
    let mut queues: Vec<String> = StepName::ALL.iter().map(|s| topology.queue(*s)).collect();
    queues.push(topology.dead_letter_queue());
    for queue in queues {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for exchange in [topology.exchange(), topology.dead_letter_exchange()] {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos() {
    let config = Config::from_env();
    let started = Instant::now();
    let run = format!("chaos-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let dir = run_dir(&run);
    let disks = dir.join("disks");
    std::fs::create_dir_all(&disks).unwrap();
    let virtio = dir.join("virtio-win.iso");
    std::fs::write(&virtio, b"virtio-win").unwrap();
    let db_name = run.replace('-', "_");
    let mut admin = sqlx::PgConnection::connect(ADMIN_DB_URL).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {db_name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let db_url = format!("postgres://postgres@127.0.0.1:5432/{db_name}");

    // The simulators.
    let (cs_addr, ls_addr) = (free_addr(), free_addr());
    let mut cloudstack_sim = Proc::start(
        "cloudstack-sim",
        workspace_bin("cloudstack-sim"),
        [
            "--listen",
            &cs_addr.to_string(),
            "--seed",
            "demo",
            "--async-job-ms",
            "400",
            "--log-level",
            "warn",
        ]
        .map(String::from)
        .to_vec(),
        Vec::new(),
        &dir,
    );
    let mut linstor_sim = Proc::start(
        "linstor-sim",
        workspace_bin("linstor-sim"),
        [
            "--listen",
            &ls_addr.to_string(),
            "--seed",
            "demo",
            "--log-level",
            "warn",
        ]
        .map(String::from)
        .to_vec(),
        Vec::new(),
        &dir,
    );
    let cs_base = format!("http://{cs_addr}");
    let ls_base = format!("http://{ls_addr}");
    cloudstack_sim
        .wait_http_ok(&format!("{cs_base}/sim/state"), Duration::from_secs(30))
        .await;
    linstor_sim
        .wait_http_ok(&format!("{ls_base}/sim/state"), Duration::from_secs(30))
        .await;

    // One configuration for every process, with short timings.
    let mut settings = Settings::load(None).unwrap();
    settings.database.url = db_url.clone().into();
    settings.amqp.url = AMQP_URL.to_owned().into();
    settings.amqp.prefix = run.clone();
    settings.amqp.queue_type = QueueType::Classic;
    let g = &mut settings.gateway;
    g.lease_duration = Duration::from_secs(4);
    g.timer_interval = Duration::from_millis(300);
    g.step_max_attempts = 5;
    g.step_retry_initial_backoff = Duration::from_millis(300);
    g.step_retry_max_backoff = Duration::from_secs(3);
    g.rate_limit_per_minute = 60_000;
    g.rate_limit_burst = 10_000;
    g.read_rate_limit_per_minute = 600_000;
    g.read_rate_limit_burst = 100_000;
    let w = &mut settings.worker;
    w.heartbeat_interval = Duration::from_secs(1);
    w.shutdown_grace = Duration::from_secs(3);
    w.vm_stop_deadline = Duration::from_secs(10);
    let cs = &mut settings.cloudstack;
    cs.endpoint = format!("{cs_base}/client/api").parse().unwrap();
    cs.request_timeout = Duration::from_secs(3);
    cs.max_retries = 3;
    cs.retry_initial_backoff = Duration::from_millis(100);
    cs.retry_max_backoff = Duration::from_millis(500);
    cs.async_poll_initial = Duration::from_millis(50);
    cs.async_poll_max = Duration::from_millis(300);
    cs.async_job_deadline = Duration::from_secs(60);
    let ls = &mut settings.linstor;
    ls.endpoint = ls_base.parse().unwrap();
    ls.request_timeout = Duration::from_secs(3);
    ls.max_retries = 3;
    ls.retry_initial_backoff = Duration::from_millis(100);
    ls.retry_max_backoff = Duration::from_millis(500);
    settings.virt_customize.command = workspace_bin("virt-customize-standin");
    settings.virt_customize.virtio_win_path = virtio;
    settings.virt_customize.deadline = Duration::from_secs(30);

    // Two gateway replicas, the workers split between them.
    let mut gateways = Vec::new();
    for n in 1..=2 {
        let (rest, grpc) = (free_addr(), free_addr());
        let mut proc = Proc::start(
            &format!("gateway-{n}"),
            workspace_bin("api-gateway"),
            Vec::new(),
            gateway_env(&settings, rest, grpc),
            &dir,
        );
        proc.wait_http_ok(
            &format!("http://{rest}/health/ready"),
            Duration::from_secs(60),
        )
        .await;
        gateways.push((Replica { proc, rest }, grpc));
    }
    let mut workers = Vec::new();
    for n in 1..=config.workers {
        let grpc = gateways[n % gateways.len()].1;
        let id = format!("worker-{n}");
        let mut env = worker_env(&settings, &format!("http://{grpc}"), &id);
        env.push(("VIRT_CUSTOMIZE_STANDIN_DURATION_MS".into(), "1500".into()));
        workers.push(Proc::start(
            &id,
            workspace_bin("step-worker"),
            Vec::new(),
            env,
            &dir,
        ));
    }
    let gateway_urls: Vec<String> = gateways
        .iter()
        .map(|(r, _)| format!("http://{}", r.rest))
        .collect();
    let http = reqwest::Client::new();

    // The VMs: one per lane for test failovers, more for live ones.
    let lanes = config.lanes();
    let seeded = seed::seed_vms(
        &http,
        &cs_base,
        &ls_base,
        &disks,
        "chaos",
        lanes + config.live_vms(),
        10,
    )
    .await;
    for vm in &seeded {
        seed::register(&http, &gateway_urls[0], vm).await;
    }
    let initial: Value = http
        .get(format!("{cs_base}/sim/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let initial_volumes: BTreeMap<String, (Value, Value)> = initial["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_owned(),
                (v["virtualmachineid"].clone(), v["deviceid"].clone()),
            )
        })
        .collect();
    let setup = started.elapsed();

    // Drive, and inject faults meanwhile.
    let fleet = Fleet {
        gateways: gateways.into_iter().map(|(r, _)| r).collect(),
        workers,
        cloudstack: cs_base.clone(),
        linstor: ls_base.clone(),
        http: http.clone(),
        unclean_exits: Vec::new(),
    };
    let stop_faults = CancellationToken::new();
    let faults = tokio::spawn(fault_schedule(
        fleet,
        config.fault_every,
        config.broker,
        stop_faults.clone(),
    ));
    let driver = Arc::new(Driver {
        http: http.clone(),
        gateways: gateway_urls.clone(),
        ledger: Mutex::default(),
        issued: AtomicUsize::new(0),
        jobs: config.jobs,
        start: Instant::now(),
        spacing: Duration::from_secs(config.seconds) / config.jobs.max(1) as u32,
        retried_requests: AtomicUsize::new(0),
    });
    let own = seeded[..lanes].to_vec();
    let live = seeded[lanes..].to_vec();
    let live_pool = Arc::new(Mutex::new(live));
    let mut tasks = Vec::new();
    for (i, vm) in own.into_iter().enumerate() {
        tasks.push(tokio::spawn(lane(
            driver.clone(),
            vm,
            live_pool.clone(),
            0x1234_5678 + i as u64 * 7919,
        )));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let driving = started.elapsed() - setup;
    stop_faults.cancel();
    let (mut fleet, fault_counts) = faults.await.unwrap();

    // Whatever the lanes stopped waiting for gets a last chance to end.
    let pool = PgPoolOptions::new()
        .max_connections(3)
        .connect(&db_url)
        .await
        .unwrap();
    let drain_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (open,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM failover_jobs WHERE status NOT IN ('completed', 'failed', 'cancelled')
                OR (auto_cleanup_at IS NOT NULL AND cleanup_job_id IS NULL)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if open == 0 || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Auto-cleanups started after their lane gave up still count as asked for.
    let mut ledger = std::mem::take(&mut *driver.ledger.lock().unwrap());
    let known: BTreeSet<String> = ledger.requested.iter().map(|r| r.job_id.clone()).collect();
    let timer_cleanups: Vec<(String,)> = sqlx::query_as(
        "SELECT c.job_id FROM failover_jobs c JOIN failover_jobs t ON c.parent_job_id = t.job_id
         WHERE c.job_type = 'cleanup' AND t.auto_cleanup",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for (id,) in timer_cleanups {
        if !known.contains(&id) {
            ledger.requested.push(Requested {
                job_id: id,
                job_type: "cleanup",
            });
        }
    }

    let cs_state: Value = http
        .get(format!("{cs_base}/sim/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ls_state: Value = http
        .get(format!("{ls_base}/sim/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (findings, jobs) = check(
        &pool,
        &ledger,
        &cs_state,
        &ls_state,
        &seeded,
        &initial_volumes,
    )
    .await;

    // The summary line.
    let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for j in &jobs {
        *by_type.entry(j.1.as_str()).or_default() += 1;
        *by_status.entry(j.2.as_str()).or_default() += 1;
    }
    // How hard the faults bit: attempts beyond the first, and how many of
    // them a lease expiry started.
    let (step_retries, lease_expiries): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT coalesce(sum(attempt - 1), 0) FROM failover_job_steps WHERE attempt > 1),
                (SELECT count(*) FROM job_tracking WHERE error_message LIKE '%lease of attempt%')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut times: Vec<f64> = jobs.iter().filter_map(|j| j.7).collect();
    times.sort_by(f64::total_cmp);
    let faults_text = fault_counts
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let total_faults: u32 = fault_counts.values().sum();
    let summary = format!(
        "CHAOS jobs={} (test={} cleanup={} live={}; completed={} failed={}) faults={} ({}) step_retries={} lease_expiries={} lost={} duplicated={} leaked={} audit_gaps={} p50={:.1}s p99={:.1}s workers={} run={:.0}s (driving {:.0}s)",
        jobs.len(),
        by_type.get("test").unwrap_or(&0),
        by_type.get("cleanup").unwrap_or(&0),
        by_type.get("live").unwrap_or(&0),
        by_status.get("completed").unwrap_or(&0),
        by_status.get("failed").unwrap_or(&0),
        total_faults,
        faults_text,
        step_retries,
        lease_expiries,
        findings.lost.len(),
        findings.duplicated.len(),
        findings.leaked.len(),
        findings.audit_gaps.len(),
        percentile(&times, 50),
        percentile(&times, 99),
        config.workers,
        started.elapsed().as_secs_f64(),
        driving.as_secs_f64(),
    );
    // Straight to stderr: shown by `cargo test` also when the test passes.
    let _ = writeln!(std::io::stderr(), "\n{summary}\n");

    let mut problems = Vec::new();
    for (what, list) in [
        ("lost", &findings.lost),
        ("duplicated", &findings.duplicated),
        ("leaked", &findings.leaked),
        ("audit gaps", &findings.audit_gaps),
        ("5xx answers", &ledger.server_errors),
        ("unclean SIGTERM exits", &fleet.unclean_exits),
    ] {
        if !list.is_empty() {
            problems.push(format!("{what}:\n  {}", list.join("\n  ")));
        }
    }
    let failovers = jobs.iter().filter(|j| j.1 != "cleanup").count();
    let completed = jobs
        .iter()
        .filter(|j| j.1 != "cleanup" && j.2 == "completed")
        .count();
    if completed * 2 < failovers {
        problems.push(format!(
            "only {completed} of {failovers} failovers completed"
        ));
    }
    if jobs.len() < config.jobs.min(8) {
        problems.push(format!("only {} jobs ran", jobs.len()));
    }

    for replica in &mut fleet.gateways {
        replica.proc.kill9().await;
    }
    for worker in &mut fleet.workers {
        worker.kill9().await;
    }
    cloudstack_sim.kill9().await;
    linstor_sim.kill9().await;
    pool.close().await;
    drop_database(&db_name, &run).await;
    if problems.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        panic!(
            "{summary}\n{}\nlogs: {}",
            problems.join("\n"),
            dir.display()
        );
    }
}
