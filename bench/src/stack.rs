//! One stack per configuration: both simulators with zero latency, the
//! gateway and the workers as processes of the release build, on a database
//! and a queue prefix of their own; and the replicated VMs of the site,
//! seeded in the simulators and registered in the inventory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::{Value, json};
use sqlx::{Connection as _, PgPool};
use uuid::Uuid;

use simulators::cloudstack::{DEMO_APPLIANCE_VM_ID, DEMO_ZONE_ID};

use crate::procs::{Process, binary, free_port, wait_ready};

/// The Postgres server the benchmark runs on (`--postgres`).
static SERVER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the server, `postgres://USER@HOST:PORT`, once at start.
pub fn use_server(url: &str) {
    let _ = SERVER.set(url.trim_end_matches('/').to_owned());
}

/// The server's URL, without a database.
pub fn server() -> &'static str {
    SERVER.get().map_or("postgres://postgres@127.0.0.1:5432", String::as_str)
}

fn admin_db() -> String {
    format!("{}/postgres", server())
}

/// VMs per test network (each network is a /24).
const VMS_PER_NETWORK: usize = 200;

/// A configuration under test: environment for the gateway and the workers.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub workers: usize,
    pub env: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct BenchStack {
    pub db_name: String,
    pub pool: PgPool,
    pub rest: String,
    pub http: reqwest::Client,
    pub gateway: Process,
    pub workers: Vec<Process>,
    sims: Vec<Process>,
    cloudstack_admin: String,
    linstor_admin: String,
    /// VMs seeded so far.
    pub vms: usize,
}

/// The id of replicated VM `i` of the benchmark's site.
pub fn vm_id(i: usize) -> String {
    format!("42420000-0000-4000-8000-{i:012x}")
}

fn volume_id(i: usize) -> String {
    format!("77770000-0000-4000-8000-{i:012x}")
}

fn test_network_id(n: usize) -> String {
    format!("88880000-0000-4000-8000-{n:012x}")
}

fn resource(i: usize) -> String {
    format!("pvc-bench-{i}")
}

pub async fn create_database(name: &str) -> anyhow::Result<String> {
    let mut admin = sqlx::PgConnection::connect(&admin_db()).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    Ok(format!("{}/{name}", server()))
}

pub async fn drop_database(name: &str) {
    if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_db()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}

/// The environment every gateway of the benchmark gets: its database, a
/// queue prefix, listeners, and rate limits out of the way (the benchmark is
/// one client address).
pub fn gateway_env(db_url: &str, prefix: &str, rest: u16, grpc: u16) -> Vec<(String, String)> {
    [
        ("FAILOVER_DATABASE__URL", db_url.to_owned()),
        ("FAILOVER_AMQP__PREFIX", prefix.to_owned()),
        ("FAILOVER_GATEWAY__REST_LISTEN", format!("127.0.0.1:{rest}")),
        ("FAILOVER_GATEWAY__GRPC_LISTEN", format!("127.0.0.1:{grpc}")),
        (
            "FAILOVER_GATEWAY__RATE_LIMIT_PER_MINUTE",
            "100000000".into(),
        ),
        ("FAILOVER_GATEWAY__RATE_LIMIT_BURST", "1000000".into()),
        (
            "FAILOVER_GATEWAY__READ_RATE_LIMIT_PER_MINUTE",
            "100000000".into(),
        ),
        ("FAILOVER_GATEWAY__READ_RATE_LIMIT_BURST", "1000000".into()),
        ("FAILOVER_LOG__FORMAT", "json".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

impl BenchStack {
    pub async fn start(
        profile: Profile,
        bin_dir: &Path,
        logs: &Path,
        run_id: &str,
    ) -> anyhow::Result<BenchStack> {
        let logs = logs.join(&profile.name);
        std::fs::create_dir_all(&logs)?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?;
        let db_name = format!("failover_bench_{}_{}", profile.name, run_id);
        let db_url = create_database(&db_name).await?;
        let prefix = format!("bench-{}-{run_id}", profile.name);

        let (cs_port, ls_port) = (free_port()?, free_port()?);
        let cloudstack = Process::start(
            "cloudstack-sim",
            &binary(bin_dir, "cloudstack-sim")?,
            &[
                "--listen".into(),
                format!("127.0.0.1:{cs_port}"),
                "--seed".into(),
                "demo".into(),
                "--async-job-ms".into(),
                "0".into(),
                "--log-level".into(),
                "warn".into(),
            ],
            &[],
            &logs,
        )?;
        let linstor = Process::start(
            "linstor-sim",
            &binary(bin_dir, "linstor-sim")?,
            &[
                "--listen".into(),
                format!("127.0.0.1:{ls_port}"),
                "--seed".into(),
                "demo".into(),
                "--log-level".into(),
                "warn".into(),
            ],
            &[],
            &logs,
        )?;
        let cloudstack_admin = format!("http://127.0.0.1:{cs_port}/sim");
        let linstor_admin = format!("http://127.0.0.1:{ls_port}/sim");
        wait_ready(
            &http,
            &format!("{cloudstack_admin}/state"),
            "the CloudStack simulator",
            Duration::from_secs(20),
        )
        .await?;
        wait_ready(
            &http,
            &format!("{linstor_admin}/state"),
            "the LINSTOR simulator",
            Duration::from_secs(20),
        )
        .await?;

        let (rest_port, grpc_port) = (free_port()?, free_port()?);
        let mut env = gateway_env(&db_url, &prefix, rest_port, grpc_port);
        let virtio = logs.join("virtio-win.iso");
        std::fs::write(&virtio, b"virtio-win")?;
        env.extend(
            [
                (
                    "FAILOVER_WORKER__GATEWAY_URL",
                    format!("http://127.0.0.1:{grpc_port}"),
                ),
                (
                    "FAILOVER_CLOUDSTACK__ENDPOINT",
                    format!("http://127.0.0.1:{cs_port}/client/api"),
                ),
                (
                    "FAILOVER_LINSTOR__ENDPOINT",
                    format!("http://127.0.0.1:{ls_port}"),
                ),
                (
                    "FAILOVER_VIRT_CUSTOMIZE__COMMAND",
                    binary(bin_dir, "virt-customize-standin")?
                        .display()
                        .to_string(),
                ),
                (
                    "FAILOVER_VIRT_CUSTOMIZE__VIRTIO_WIN_PATH",
                    virtio.display().to_string(),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
        );
        env.extend(profile.env.iter().cloned());
        let gateway = Process::start(
            "gateway",
            &binary(bin_dir, "api-gateway")?,
            &[],
            &env,
            &logs,
        )?;
        let rest = format!("http://127.0.0.1:{rest_port}");
        wait_ready(
            &http,
            &format!("{rest}/health/ready"),
            "the gateway",
            Duration::from_secs(60),
        )
        .await?;
        let mut workers = Vec::new();
        for n in 1..=profile.workers {
            let port = free_port()?;
            let mut env = env.clone();
            env.push((
                "FAILOVER_WORKER__WORKER_ID".into(),
                format!("bench-worker-{n}"),
            ));
            env.push((
                "FAILOVER_WORKER__METRICS_LISTEN".into(),
                format!("127.0.0.1:{port}"),
            ));
            workers.push(Process::start(
                &format!("worker-{n}"),
                &binary(bin_dir, "step-worker")?,
                &[],
                &env,
                &logs,
            )?);
            wait_ready(
                &http,
                &format!("http://127.0.0.1:{port}/health/ready"),
                "a worker",
                Duration::from_secs(30),
            )
            .await?;
        }
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&db_url)
            .await?;
        Ok(BenchStack {
            db_name,
            pool,
            rest,
            http,
            gateway,
            workers,
            sims: vec![cloudstack, linstor],
            cloudstack_admin,
            linstor_admin,
            vms: 0,
        })
    }

    /// Adds `count` more replicated Linux VMs of one disk each: a volume on
    /// the appliance VM, a LINSTOR resource, a test network per 200 VMs,
    /// and the VM registered in the inventory. Returns their indices.
    pub async fn add_vms(&mut self, count: usize) -> anyhow::Result<std::ops::Range<usize>> {
        let range = self.vms..self.vms + count;
        for chunk in range.clone().collect::<Vec<_>>().chunks(500) {
            let first_of_network = |i: &usize| i.is_multiple_of(VMS_PER_NETWORK);
            let seed = json!({
                "networks": chunk.iter().filter(|i| first_of_network(i)).map(|i| {
                    let n = i / VMS_PER_NETWORK;
                    json!({"id": test_network_id(n), "name": format!("bench-test-{n}"),
                           "zoneid": DEMO_ZONE_ID,
                           "cidr": format!("10.{}.{}.0/24", 128 + n / 256, n % 256)})
                }).collect::<Vec<_>>(),
                "volumes": chunk.iter().map(|&i| json!({
                    "id": volume_id(i), "name": format!("bench-vm-{i}-disk0"), "size_gib": 20,
                    "zoneid": DEMO_ZONE_ID, "virtualmachineid": DEMO_APPLIANCE_VM_ID,
                    "deviceid": 10 + i,
                })).collect::<Vec<_>>(),
            });
            self.admin_post(&format!("{}/seed", self.cloudstack_admin), &seed)
                .await
                .context("seeding the CloudStack simulator")?;
            let seed = json!({
                "resource_definitions": chunk.iter().map(|&i| json!({
                    "name": resource(i), "volume_definitions": [{"size_kib": 20971520}],
                })).collect::<Vec<_>>(),
            });
            self.admin_post(&format!("{}/seed", self.linstor_admin), &seed)
                .await
                .context("seeding the LINSTOR simulator")?;
        }
        let rest = self.rest.clone();
        futures::stream::iter(range.clone())
            .map(|i| {
                let http = self.http.clone();
                let rest = rest.clone();
                async move {
                    let body = json!({
                        "vm_name": format!("bench-vm-{i}"),
                        "os_family": "linux",
                        "cpu_count": 2,
                        "memory_mb": 4096,
                        "replication_state": "replicated",
                        "disks": [{"disk_id": "disk-0", "cloudstack_volume_id": volume_id(i),
                                   "linstor_resource": resource(i),
                                   "device_path": format!("/dev/drbd{}", 1000 + i), "boot": true}],
                        "nics": [{"source_network": "VM Network",
                                  "test_network_id": test_network_id(i / VMS_PER_NETWORK)}],
                    });
                    let answer = http
                        .put(format!("{rest}/api/v1/vms/{}", vm_id(i)))
                        .json(&body)
                        .send()
                        .await?;
                    anyhow::ensure!(
                        answer.status().is_success(),
                        "registering VM {i}: {} {}",
                        answer.status(),
                        answer.text().await.unwrap_or_default()
                    );
                    Ok(())
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        self.vms = range.end;
        Ok(range)
    }

    async fn admin_post(&self, url: &str, body: &Value) -> anyhow::Result<()> {
        let answer = self.http.post(url).json(body).send().await?;
        anyhow::ensure!(
            answer.status().is_success(),
            "{url}: {} {}",
            answer.status(),
            answer.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// The simulators' processes.
    pub fn simulator_pids(&self) -> Vec<u32> {
        self.sims.iter().map(Process::pid).collect()
    }

    /// Whether every process still runs (a crash ends the run with its name).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for process in std::iter::once(&mut self.gateway)
            .chain(self.workers.iter_mut())
            .chain(self.sims.iter_mut())
        {
            anyhow::ensure!(
                process.running(),
                "{} exited during the run; see its log",
                process.name
            );
        }
        Ok(())
    }

    /// Stops every process; drops the database unless `keep`.
    pub async fn stop(self, keep: bool) {
        for worker in self.workers {
            worker.stop(Duration::from_secs(10)).await;
        }
        self.gateway.stop(Duration::from_secs(10)).await;
        for sim in self.sims {
            sim.stop(Duration::from_secs(5)).await;
        }
        self.pool.close().await;
        if keep {
            eprintln!("  kept database {}", self.db_name);
        } else {
            drop_database(&self.db_name).await;
        }
    }
}

/// The folder a run keeps its logs in.
pub fn run_folder(root: &Path, run_id: &str) -> anyhow::Result<PathBuf> {
    let dir = root.join(run_id);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A short random id for names of the run.
pub fn run_id() -> String {
    Uuid::new_v4().simple().to_string()[..8].to_owned()
}
