//! Shared by the CloudStack test files: the simulator served in-process on
//! `127.0.0.1:0` with the demo scenario, a client with short timings, and
//! the admin API.
// Each test file uses a different part of this module.
#![allow(dead_code, unused_imports)]

use std::sync::Arc;
use std::time::Duration;

use failover_platform::config::CloudStackSettings;
use secrecy::SecretString;
use serde_json::{Value, json};
use simulators::cloudstack::{CloudStackSim, CloudStackSimConfig, router};
use step_worker::cloudstack::{CloudStackClient, DeployVmRequest};
use url::Url;
use uuid::Uuid;

pub use simulators::cloudstack::{
    DEFAULT_API_KEY, DEFAULT_SECRET_KEY, DEMO_APPLIANCE_VM_ID, DEMO_LIVE_NETWORK_ID,
    DEMO_OFFERING_SMALL_ID, DEMO_PG_BOOT_VOLUME_ID, DEMO_TEMPLATE_ID, DEMO_TEST_NETWORK_ID,
    DEMO_WIN_BOOT_VOLUME_ID, DEMO_WIN_DATA_VOLUME_ID, DEMO_ZONE_ID,
};

/// Async jobs of the simulator take this long in tests.
pub const JOB_MS: u64 = 50;

pub struct Harness {
    pub sim: Arc<CloudStackSim>,
    /// `http://127.0.0.1:PORT`
    pub base: Url,
    pub client: CloudStackClient,
    pub http: reqwest::Client,
}

/// Client settings for the simulator at `base`: short polls and backoffs.
pub fn settings(base: &Url, api_key: &str, secret_key: &str) -> CloudStackSettings {
    CloudStackSettings {
        endpoint: base.join("/client/api").expect("endpoint url"),
        api_key: api_key.to_owned(),
        secret_key: SecretString::from(secret_key.to_owned()),
        signature_lifetime: Duration::from_secs(300),
        request_timeout: Duration::from_secs(5),
        max_retries: 3,
        retry_initial_backoff: Duration::from_millis(10),
        retry_max_backoff: Duration::from_millis(40),
        async_poll_initial: Duration::from_millis(10),
        async_poll_max: Duration::from_millis(40),
        async_job_deadline: Duration::from_secs(10),
        ca_cert_path: None,
    }
}

/// Starts a simulator with the demo scenario and a client of it.
pub async fn start() -> Harness {
    let sim = Arc::new(CloudStackSim::new(CloudStackSimConfig {
        async_job_duration: Duration::from_millis(JOB_MS),
        ..CloudStackSimConfig::default()
    }));
    sim.seed_demo().expect("demo seed");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(simulators::server::serve(
        listener,
        router(sim.clone()),
        std::future::pending(),
    ));
    let base = Url::parse(&format!("http://{addr}")).expect("base url");
    let client = CloudStackClient::new(&settings(&base, DEFAULT_API_KEY, DEFAULT_SECRET_KEY))
        .expect("client");
    Harness {
        sim,
        base,
        client,
        http: reqwest::Client::new(),
    }
}

impl Harness {
    /// Another client of the same simulator.
    pub fn client_with(&self, settings: &CloudStackSettings) -> CloudStackClient {
        CloudStackClient::new(settings).expect("client")
    }

    pub fn settings(&self) -> CloudStackSettings {
        settings(&self.base, DEFAULT_API_KEY, DEFAULT_SECRET_KEY)
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, self.base.join(path).expect("admin url"));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("admin call");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("admin json"))
    }

    /// `GET /sim/state`.
    pub async fn state(&self) -> Value {
        let (status, body) = self.admin(reqwest::Method::GET, "/sim/state", None).await;
        assert_eq!(status, 200);
        body
    }

    /// The VMs in `/sim/state`.
    pub async fn vms(&self) -> Vec<Value> {
        self.state().await["vms"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The volume `id` as `/sim/state` shows it.
    pub async fn volume(&self, id: &str) -> Option<Value> {
        let state = self.state().await;
        state["volumes"]
            .as_array()?
            .iter()
            .find(|v| v["id"] == id)
            .cloned()
    }

    /// `POST /sim/faults`.
    pub async fn fault(&self, rule: Value) {
        let (status, body) = self
            .admin(reqwest::Method::POST, "/sim/faults", Some(rule))
            .await;
        assert_eq!(status, 200, "fault refused: {body}");
    }

    /// `PUT /sim/config`.
    pub async fn set_job_ms(&self, ms: u64) {
        let (status, _) = self
            .admin(
                reqwest::Method::PUT,
                "/sim/config",
                Some(json!({ "async_job_ms": ms })),
            )
            .await;
        assert_eq!(status, 200);
    }
}

/// A deploy into the demo zone on the test network.
pub fn deploy_request(name: &str, start_vm: bool) -> DeployVmRequest {
    DeployVmRequest {
        zone_id: DEMO_ZONE_ID.to_owned(),
        service_offering_id: DEMO_OFFERING_SMALL_ID.to_owned(),
        template_id: DEMO_TEMPLATE_ID.to_owned(),
        name: Some(name.to_owned()),
        display_name: Some(format!("{name} (failover)")),
        network_ids: vec![DEMO_TEST_NETWORK_ID.to_owned()],
        start_vm,
        custom_id: Uuid::new_v4(),
        details: Default::default(),
    }
}
