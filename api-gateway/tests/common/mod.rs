//! A whole stack per test: a fresh Postgres database with the real
//! migrations, RabbitMQ objects under a random prefix, both simulators on
//! port 0 (seeded with the demo scenario), the gateway on port 0, and
//! workers in-process or as real processes.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use failover_core::pipeline::StepName;
use failover_platform::Settings;
use failover_platform::config::QueueType;
use failover_platform::queue::StepTopology;
use simulators::cloudstack::{self as cs_sim, CloudStackSim, CloudStackSimConfig};
use simulators::linstor::{self as ls_sim, LinstorSim, LinstorSimConfig};

pub const ADMIN_DB_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The demo VMs, as registered in the inventory.
pub const WIN_VM_ID: &str = "4205a1b2-3c4d-4e6f-8a8b-9c0d1e2f3a4b";
pub const LINUX_VM_ID: &str = "420570c7-f61f-a930-77c5-1e876786cb3c";

pub struct Stack {
    pub settings: Arc<Settings>,
    pub pool: PgPool,
    pub db_name: String,
    pub base_url: String,
    pub grpc_url: String,
    pub cloudstack: Arc<CloudStackSim>,
    pub linstor: Arc<LinstorSim>,
    pub disks: tempfile::TempDir,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    workers: Vec<CancellationToken>,
    gateways: Vec<(
        CancellationToken,
        Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    )>,
    gateway_addrs: Vec<(SocketAddr, SocketAddr)>,
}

async fn serve(router: axum::Router, shutdown: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(simulators::server::serve(listener, router, async move {
        shutdown.cancelled().await
    }));
    addr
}

/// A binary of the workspace, built by `cargo test --workspace`.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(|_| {}).await
    }

    /// A stack whose settings `adjust` changes first.
    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> Stack {
        let shutdown = CancellationToken::new();
        let cloudstack = Arc::new(CloudStackSim::new(CloudStackSimConfig {
            async_job_duration: Duration::from_millis(30),
            ..Default::default()
        }));
        cloudstack.seed_demo().unwrap();
        let linstor = Arc::new(LinstorSim::new(LinstorSimConfig::default()));
        linstor.seed_demo();
        let cs_addr = serve(cs_sim::router(cloudstack.clone()), shutdown.clone()).await;
        let ls_addr = serve(ls_sim::router(linstor.clone()), shutdown.clone()).await;

        let db_name = format!("failover_test_{}", Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(ADMIN_DB_URL).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {db_name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let db_url = format!("postgres://postgres@127.0.0.1:5432/{db_name}");

        let disks = tempfile::tempdir().unwrap();
        let virtio = disks.path().join("virtio-win.iso");
        std::fs::write(&virtio, b"virtio-win").unwrap();

        let rest = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rest_addr = rest.local_addr().unwrap();
        let grpc_addr = grpc.local_addr().unwrap();

        let mut settings = Settings::load(None).unwrap();
        settings.database.url = db_url.clone().into();
        settings.amqp.url = AMQP_URL.to_owned().into();
        settings.amqp.prefix = format!("test-{}", Uuid::new_v4().simple());
        settings.amqp.queue_type = QueueType::Classic;
        settings.gateway.lease_duration = Duration::from_secs(3);
        settings.gateway.timer_interval = Duration::from_millis(200);
        settings.gateway.step_retry_initial_backoff = Duration::from_millis(200);
        settings.gateway.step_retry_max_backoff = Duration::from_secs(1);
        settings.worker.gateway_url = format!("http://{grpc_addr}").parse().unwrap();
        settings.worker.heartbeat_interval = Duration::from_millis(500);
        settings.worker.shutdown_grace = Duration::from_secs(5);
        // Several workers share this host: each status listener on a port of its own.
        settings.worker.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        // Tests send many requests from one address; the limits have their own test.
        settings.gateway.rate_limit_per_minute = 60_000;
        settings.gateway.rate_limit_burst = 10_000;
        settings.gateway.read_rate_limit_per_minute = 60_000;
        settings.gateway.read_rate_limit_burst = 10_000;
        settings.cloudstack.endpoint = format!("http://{cs_addr}/client/api").parse().unwrap();
        settings.cloudstack.async_poll_initial = Duration::from_millis(20);
        settings.cloudstack.async_poll_max = Duration::from_millis(200);
        settings.cloudstack.async_job_deadline = Duration::from_secs(30);
        settings.cloudstack.retry_initial_backoff = Duration::from_millis(50);
        settings.cloudstack.retry_max_backoff = Duration::from_millis(200);
        settings.cloudstack.request_timeout = Duration::from_secs(10);
        settings.linstor.endpoint = format!("http://{ls_addr}").parse().unwrap();
        settings.linstor.retry_initial_backoff = Duration::from_millis(50);
        settings.linstor.retry_max_backoff = Duration::from_millis(200);
        settings.linstor.request_timeout = Duration::from_secs(10);
        settings.virt_customize.command = workspace_bin("virt-customize-standin");
        settings.virt_customize.virtio_win_path = virtio;
        settings.virt_customize.deadline = Duration::from_secs(30);
        adjust(&mut settings);
        let settings = Arc::new(settings);

        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect(&db_url)
            .await
            .unwrap();
        api_gateway::migrate(&pool).await.unwrap();
        let gateway_token = shutdown.child_token();
        let gateway = tokio::spawn(api_gateway::run(
            settings.clone(),
            pool.clone(),
            api_gateway::Listeners { rest, grpc },
            gateway_token.clone(),
        ));
        wait_until_answers(&format!("http://{rest_addr}/health/ready")).await;
        Stack {
            settings,
            pool,
            db_name,
            base_url: format!("http://{rest_addr}"),
            grpc_url: format!("http://{grpc_addr}"),
            cloudstack,
            linstor,
            disks,
            http: reqwest::Client::new(),
            shutdown,
            workers: Vec::new(),
            gateways: vec![(gateway_token, Some(gateway))],
            gateway_addrs: vec![(rest_addr, grpc_addr)],
        }
    }

    /// Starts another gateway replica on the same database and broker;
    /// returns its REST base URL.
    pub async fn start_gateway_replica(&mut self) -> String {
        let rest = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.serve_gateway(rest, grpc).await
    }

    /// Stops gateway replica `index` and starts a new process of it on the
    /// same addresses, as a restart does.
    pub async fn restart_gateway(&mut self, index: usize) {
        self.stop_gateway(index).await;
        let (rest_addr, grpc_addr) = self.gateway_addrs[index];
        let rest = TcpListener::bind(rest_addr).await.unwrap();
        let grpc = TcpListener::bind(grpc_addr).await.unwrap();
        self.serve_gateway(rest, grpc).await;
    }

    async fn serve_gateway(&mut self, rest: TcpListener, grpc: TcpListener) -> String {
        let base = format!("http://{}", rest.local_addr().unwrap());
        self.gateway_addrs
            .push((rest.local_addr().unwrap(), grpc.local_addr().unwrap()));
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect(&format!(
                "postgres://postgres@127.0.0.1:5432/{}",
                self.db_name
            ))
            .await
            .unwrap();
        let token = self.shutdown.child_token();
        self.gateways.push((
            token.clone(),
            Some(tokio::spawn(api_gateway::run(
                self.settings.clone(),
                pool,
                api_gateway::Listeners { rest, grpc },
                token,
            ))),
        ));
        wait_until_answers(&format!("{base}/health/ready")).await;
        base
    }

    /// The gRPC URL of gateway replica `index`.
    pub fn grpc_url_of(&self, index: usize) -> String {
        format!("http://{}", self.gateway_addrs[index].1)
    }

    /// Stops gateway replica `index` (its REST and gRPC listeners close).
    pub async fn stop_gateway(&mut self, index: usize) {
        let (token, handle) = &mut self.gateways[index];
        token.cancel();
        if let Some(handle) = handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
    }

    /// Starts an in-process worker for every step.
    pub fn start_worker(&mut self) {
        let token = CancellationToken::new();
        let mut settings = (*self.settings).clone();
        settings.worker.worker_id = format!("test-worker-{}", self.workers.len() + 1);
        tokio::spawn(step_worker::runtime::run(Arc::new(settings), token.clone()));
        self.workers.push(token);
    }

    /// Starts an in-process worker whose settings `adjust` changes first;
    /// returns the address of its `/metrics` and `/health` listener.
    pub async fn start_worker_with(&mut self, adjust: impl FnOnce(&mut Settings)) -> SocketAddr {
        let token = CancellationToken::new();
        let mut settings = (*self.settings).clone();
        settings.worker.worker_id = format!("test-worker-{}", self.workers.len() + 1);
        adjust(&mut settings);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(step_worker::runtime::serve(
            Arc::new(settings),
            step_worker::runtime::Listeners {
                status: Some(listener),
            },
            token.clone(),
        ));
        self.workers.push(token);
        addr
    }

    /// The environment that points a worker process at this stack.
    pub fn worker_env(&self, worker_id: &str) -> Vec<(String, String)> {
        use secrecy::ExposeSecret;
        let s = &self.settings;
        vec![
            (
                "FAILOVER_AMQP__URL".into(),
                s.amqp.url.expose_secret().to_owned(),
            ),
            ("FAILOVER_AMQP__PREFIX".into(), s.amqp.prefix.clone()),
            ("FAILOVER_WORKER__GATEWAY_URL".into(), self.grpc_url.clone()),
            ("FAILOVER_WORKER__WORKER_ID".into(), worker_id.into()),
            ("FAILOVER_WORKER__HEARTBEAT_INTERVAL".into(), "500ms".into()),
            (
                "FAILOVER_CLOUDSTACK__ENDPOINT".into(),
                s.cloudstack.endpoint.to_string(),
            ),
            (
                "FAILOVER_CLOUDSTACK__ASYNC_POLL_INITIAL".into(),
                "20ms".into(),
            ),
            ("FAILOVER_CLOUDSTACK__ASYNC_POLL_MAX".into(), "200ms".into()),
            (
                "FAILOVER_LINSTOR__ENDPOINT".into(),
                s.linstor.endpoint.to_string(),
            ),
            (
                "FAILOVER_VIRT_CUSTOMIZE__COMMAND".into(),
                s.virt_customize.command.display().to_string(),
            ),
            (
                "FAILOVER_VIRT_CUSTOMIZE__VIRTIO_WIN_PATH".into(),
                s.virt_customize.virtio_win_path.display().to_string(),
            ),
            ("FAILOVER_LOG__LEVEL".into(), "info".into()),
            (
                "FAILOVER_WORKER__METRICS_LISTEN".into(),
                "127.0.0.1:0".into(),
            ),
        ]
    }

    pub fn disk_path(&self, name: &str) -> PathBuf {
        self.disks.path().join(name)
    }

    /// Registers the demo's Windows VM (two disks) and Linux VM (one disk),
    /// with disk files for the virt-customize stand-in.
    pub async fn register_demo_vms(&self) {
        for name in [
            "win2019-app-disk0.raw",
            "win2019-app-disk1.raw",
            "pgtest1-disk0.raw",
        ] {
            std::fs::write(self.disk_path(name), b"disk").unwrap();
        }
        let win = json!({
            "vm_name": "win2019-app",
            "os_family": "windows",
            "cpu_count": 2,
            "memory_mb": 4096,
            "replication_state": "replicated",
            "disks": [
                {"disk_id": "disk-0", "cloudstack_volume_id": cs_sim::DEMO_WIN_BOOT_VOLUME_ID,
                 "linstor_resource": ls_sim::DEMO_RD_WIN2019_APP_DISK0,
                 "device_path": self.disk_path("win2019-app-disk0.raw"), "boot": true},
                {"disk_id": "disk-1", "cloudstack_volume_id": cs_sim::DEMO_WIN_DATA_VOLUME_ID,
                 "linstor_resource": ls_sim::DEMO_RD_WIN2019_APP_DISK1,
                 "device_path": self.disk_path("win2019-app-disk1.raw"), "boot": false}
            ],
            "nics": [{"source_network": "VM Network", "live_network_id": cs_sim::DEMO_VM_NETWORK_ID}]
        });
        let linux = json!({
            "vm_name": "pgtest1",
            "os_family": "linux",
            "cpu_count": 1,
            "memory_mb": 1024,
            "replication_state": "replicated",
            "disks": [
                {"disk_id": "disk-0", "cloudstack_volume_id": cs_sim::DEMO_PG_BOOT_VOLUME_ID,
                 "linstor_resource": ls_sim::DEMO_RD_PGTEST1_DISK0,
                 "device_path": self.disk_path("pgtest1-disk0.raw"), "boot": true}
            ],
            "nics": [{"source_network": "VM Network"}]
        });
        for (id, body) in [(WIN_VM_ID, win), (LINUX_VM_ID, linux)] {
            let (status, body) = self.put(&format!("/api/v1/vms/{id}"), &body).await;
            assert!(status == 201 || status == 200, "{status} {body}");
        }
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .put(format!("{}{path}", self.base_url))
            .json(body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string()).await
    }

    pub async fn post_raw(&self, path: &str, body: String) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("non-JSON answer {status}: {text}"));
        (status, value)
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .delete(format!("{}{path}", self.base_url))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("non-JSON answer {status}: {text}"));
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    pub async fn start_failover(&self, kind: &str, body: Value) -> String {
        let (status, answer) = self.post(&format!("/api/v1/failover/{kind}"), &body).await;
        assert_eq!(status, 202, "{answer}");
        answer["job_id"].as_str().unwrap().to_owned()
    }

    /// Polls the job until it is completed, failed or cancelled.
    pub async fn wait_terminal(&self, job_id: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (status, body) = self.get(&format!("/api/v1/failover/jobs/{job_id}")).await;
            assert_eq!(status, 200, "{body}");
            let job = body["data"].clone();
            if matches!(
                job["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {job_id} not finished in {within:?}: {job:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the job until `ready` holds for it.
    pub async fn wait_for(
        &self,
        job_id: &str,
        within: Duration,
        ready: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (_, body) = self.get(&format!("/api/v1/failover/jobs/{job_id}")).await;
            if ready(&body["data"]) {
                return body["data"].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {job_id} never reached the expected state: {:#}",
                body["data"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the failover can change in the simulators: VMs, volumes with
    /// their attachments, and LINSTOR snapshots.
    pub fn footprint(&self) -> Value {
        let cs = self.cloudstack_state();
        let mut vms: Vec<Value> = cs["vms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| json!({"id": v["id"], "state": v["state"]}))
            .collect();
        vms.sort_by_key(|v| v["id"].to_string());
        let mut volumes: Vec<Value> = cs["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| json!({"id": v["id"], "vm": v["virtualmachineid"], "deviceid": v["deviceid"], "type": v["type"]}))
            .collect();
        volumes.sort_by_key(|v| v["id"].to_string());
        let mut snapshots: Vec<String> = self
            .linstor
            .state()
            .resource_definitions
            .iter()
            .flat_map(|r| {
                r.snapshots
                    .iter()
                    .map(move |s| format!("{}/{}", r.name, s.name))
            })
            .collect();
        snapshots.sort();
        json!({"vms": vms, "volumes": volumes, "snapshots": snapshots})
    }

    pub fn rollback_count(&self, rd: &str) -> usize {
        self.linstor
            .state()
            .resource_definitions
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(rd))
            .map(|r| r.rollback_count)
            .unwrap_or_default()
    }

    pub fn cloudstack_state(&self) -> Value {
        self.cloudstack.state_json()
    }

    /// VMs that exist (not expunged) besides the appliance.
    pub fn destination_vms(&self) -> Vec<Value> {
        self.cloudstack_state()["vms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["id"] != cs_sim::DEMO_APPLIANCE_VM_ID)
            .cloned()
            .collect()
    }

    pub fn volume(&self, id: &str) -> Value {
        self.cloudstack_state()["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("volume {id} does not exist"))
    }

    /// Stops everything and removes the database and the broker objects.
    pub async fn stop(mut self) {
        for worker in &self.workers {
            worker.cancel();
        }
        self.shutdown.cancel();
        for (_, gateway) in self.gateways.drain(..) {
            if let Some(gateway) = gateway {
                let _ = tokio::time::timeout(Duration::from_secs(10), gateway).await;
            }
        }
        self.pool.close().await;
        if let Ok(mut admin) = sqlx::PgConnection::connect(ADMIN_DB_URL).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.db_name
            ))
            .execute(&mut admin)
            .await;
        }
        delete_broker_objects(&self.settings.amqp.prefix).await;
    }
}

async fn wait_until_answers(url: &str) {
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} does not answer");
}

async fn delete_broker_objects(prefix: &str) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let Ok(conn) = failover_platform::queue::connect(AMQP_URL, "test-cleanup").await else {
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
