//! The CloudStack management-server simulator: `/client/api` with the real
//! signature check (version 3, `expires`), the real answer and error
//! shapes, async jobs that take a configurable time and end through
//! `queryAsyncJobResult`, and the state rules of the real server (volumes
//! in use, root-disk swaps only on stopped VMs, host names unique per
//! network, custom ids never reused, ...). State is in memory; the admin API
//! under `/sim/` seeds it, shows it, injects faults and resets it.
//!
//! Always answers JSON, also when a request lacks `response=json` (the real
//! server would answer XML).

mod admin;
mod api;
mod commands;
mod demo;
mod effects;
mod errors;
mod jobs;
mod lists;
mod model;
mod render;
mod seed;
mod vm_commands;
mod volume_commands;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::any;
use serde_json::{Value, json};

pub use admin::ConfigBody;
pub use demo::*;
pub use errors::AUTH_TEXT;
pub use seed::{
    SeedError, SeedNetwork, SeedOffering, SeedReport, SeedRequest, SeedTemplate, SeedVm,
    SeedVolume, SeedZone,
};

use crate::faults::Faults;
use model::World;

/// The API key pair the simulator accepts unless told otherwise.
pub const DEFAULT_API_KEY: &str = "demo-api-key";
pub const DEFAULT_SECRET_KEY: &str = "demo-secret-key";

/// How the simulator behaves.
#[derive(Clone)]
pub struct CloudStackSimConfig {
    /// How long an async job runs before `queryAsyncJobResult` reports its end.
    pub async_job_duration: Duration,
    /// API key → secret key.
    pub accounts: BTreeMap<String, String>,
}

impl fmt::Debug for CloudStackSimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudStackSimConfig")
            .field("async_job_duration", &self.async_job_duration)
            .field("api_keys", &self.accounts.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for CloudStackSimConfig {
    fn default() -> Self {
        Self {
            async_job_duration: Duration::from_millis(500),
            accounts: BTreeMap::from([(DEFAULT_API_KEY.to_owned(), DEFAULT_SECRET_KEY.to_owned())]),
        }
    }
}

/// One simulated management server.
#[derive(Debug)]
pub struct CloudStackSim {
    config: Mutex<CloudStackSimConfig>,
    world: Mutex<World>,
    faults: Faults,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CloudStackSim {
    /// An empty simulator (see [`Self::seed_demo`]).
    pub fn new(config: CloudStackSimConfig) -> Self {
        Self {
            config: Mutex::new(config),
            world: Mutex::new(World::default()),
            faults: Faults::default(),
        }
    }

    /// Adds the demo scenario (see the `DEMO_*` constants).
    pub fn seed_demo(&self) -> Result<SeedReport, SeedError> {
        self.seed(&demo::demo_seed())
    }

    /// Adds what `request` describes, all or nothing.
    pub fn seed(&self, request: &SeedRequest) -> Result<SeedReport, SeedError> {
        seed::apply(&mut lock(&self.world), request)
    }

    /// Forgets everything (entities, jobs, removed ids) and clears faults.
    pub fn reset(&self) {
        *lock(&self.world) = World::default();
        self.faults.clear();
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub fn async_job_duration(&self) -> Duration {
        lock(&self.config).async_job_duration
    }

    /// Applies to jobs started from now on.
    pub fn set_async_job_duration(&self, duration: Duration) {
        lock(&self.config).async_job_duration = duration;
    }

    fn secret_of(&self, api_key: &str) -> Option<String> {
        lock(&self.config).accounts.get(api_key).cloned()
    }

    fn with_world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut lock(&self.world))
    }

    /// Everything that exists now, rendered as the API renders it (jobs
    /// that are due are ended first): `zones`, `service_offerings`,
    /// `templates`, `networks`, `vms`, `volumes`, `snapshots`,
    /// `vm_snapshots`, `async_jobs` (each with the API `command` that
    /// started it).
    pub fn state_json(&self) -> Value {
        self.with_world(|w| {
            w.advance(Instant::now());
            json!({
                "zones": w.zones.iter().map(render::zone).collect::<Vec<_>>(),
                "service_offerings": w.offerings.iter().map(render::offering).collect::<Vec<_>>(),
                "templates": w.templates.iter().map(|t| render::template(w, t)).collect::<Vec<_>>(),
                "networks": w.networks.iter().map(|n| render::network(w, n)).collect::<Vec<_>>(),
                "vms": w.vms.iter().map(|v| render::vm(w, v)).collect::<Vec<_>>(),
                "volumes": w.volumes.iter().map(|v| render::volume(w, v)).collect::<Vec<_>>(),
                "snapshots": w.snapshots.iter().map(render::snapshot).collect::<Vec<_>>(),
                "vm_snapshots": w.vm_snapshots.iter().map(render::vm_snapshot).collect::<Vec<_>>(),
                "async_jobs": w.jobs.iter().map(|j| {
                    let mut job = jobs::render(j);
                    job["command"] = json!(j.command);
                    job
                }).collect::<Vec<_>>(),
            })
        })
    }
}

/// The simulator's routes: `/client/api` (GET or POST) and `/sim/...`.
pub fn router(sim: Arc<CloudStackSim>) -> Router {
    Router::new()
        .route("/client/api", any(api::handle))
        .merge(admin::routes())
        .with_state(sim)
}
