//! The LINSTOR controller simulator: REST v1 (`/v1/...`) for resource
//! definitions and snapshots as linstor-server answers them, and an admin
//! API under `/sim/` to seed, inspect, mark resources in use and inject
//! faults.
//!
//! Faithful corners: every mutating answer and every error is a JSON array
//! of `ApiCallRc` entries whose `ret_code` carries the severity, operation
//! and object masks; the HTTP status follows the first error entry
//! (not-found codes 404, access 403, everything else 500, "already exists"
//! included; warnings keep 200); names are case-insensitive; a rollback is
//! refused while the resource is in use (997) and, as on controllers that
//! roll back with `zfs rollback` or before 1.32, unless the snapshot is the
//! most recent (514). With a bearer token configured every `/v1` call needs
//! `Authorization: Bearer <token>` (401 otherwise, as the controller's
//! token filter answers).

mod admin;
mod rc;
mod rest;
mod store;
mod views;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;

pub use admin::{
    RdState, RollbackState, SeedError, SeedRequest, SeedResourceDefinition, SeedSnapshot,
    SeedVolume, SimState, SnapshotState, VolumeState,
};
use store::Store;

use crate::faults::Faults;

/// Resource definition of the demo VM `win2019-app`, system disk.
pub const DEMO_RD_WIN2019_APP_DISK0: &str = "pvc-win2019-app-disk0";
/// Resource definition of the demo VM `win2019-app`, data disk.
pub const DEMO_RD_WIN2019_APP_DISK1: &str = "pvc-win2019-app-disk1";
/// Resource definition of the demo VM `pgtest1`, its only disk.
pub const DEMO_RD_PGTEST1_DISK0: &str = "pvc-pgtest1-disk0";
/// The satellites holding the demo resources (two replicas each).
pub const DEMO_NODES: [&str; 2] = ["linstor-sat-1", "linstor-sat-2"];
/// Every demo resource definition with its size in KiB (one volume each),
/// the sizes of the CloudStack simulator's demo replica volumes.
pub const DEMO_RESOURCE_DEFINITIONS: [(&str, u64); 3] = [
    (DEMO_RD_WIN2019_APP_DISK0, 60 * 1024 * 1024),
    (DEMO_RD_WIN2019_APP_DISK1, 100 * 1024 * 1024),
    (DEMO_RD_PGTEST1_DISK0, 20 * 1024 * 1024),
];

/// How the simulated controller behaves.
#[derive(Debug, Clone)]
pub struct LinstorSimConfig {
    /// When set, every `/v1` call needs `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// How long taking a snapshot takes; meanwhile the snapshot is listed
    /// without the `SUCCESSFUL` flag and the create call has not answered.
    pub snapshot_duration: Duration,
    /// Refuse a rollback to a snapshot that has newer ones (514).
    pub rollback_requires_most_recent: bool,
}

impl Default for LinstorSimConfig {
    fn default() -> Self {
        Self {
            bearer_token: None,
            snapshot_duration: Duration::ZERO,
            rollback_requires_most_recent: true,
        }
    }
}

/// The simulated controller: its objects, its fault rules, its behaviour.
#[derive(Debug)]
pub struct LinstorSim {
    store: Mutex<Store>,
    faults: Faults,
    config: LinstorSimConfig,
}

impl LinstorSim {
    /// An empty controller (no resource definitions).
    pub fn new(config: LinstorSimConfig) -> Self {
        Self {
            store: Mutex::new(Store::default()),
            faults: Faults::default(),
            config,
        }
    }

    pub fn config(&self) -> &LinstorSimConfig {
        &self.config
    }

    /// The fault rules (the same ones `/sim/faults` manages).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Adds the demo resource definitions ([`DEMO_RESOURCE_DEFINITIONS`]
    /// on [`DEMO_NODES`]), replacing any of the same names.
    pub fn seed_demo(&self) {
        let request = SeedRequest {
            resource_definitions: DEMO_RESOURCE_DEFINITIONS
                .iter()
                .map(|(name, size_kib)| SeedResourceDefinition {
                    name: (*name).to_owned(),
                    nodes: DEMO_NODES.iter().map(|n| (*n).to_owned()).collect(),
                    volume_definitions: vec![SeedVolume {
                        volume_number: Some(0),
                        size_kib: *size_kib,
                    }],
                    snapshots: Vec::new(),
                    in_use_on: None,
                })
                .collect(),
        };
        self.seed(request).expect("the demo seed is valid");
    }

    /// Adds resource definitions (with volumes, snapshots, in-use marks),
    /// replacing any of the same names. Answers how many were added.
    pub fn seed(&self, request: SeedRequest) -> Result<usize, SeedError> {
        let rds = request.into_resource_definitions()?;
        let count = rds.len();
        let mut store = self.store();
        for rd in rds {
            store.put(rd);
        }
        Ok(count)
    }

    /// Marks resource definition `rd` in use on `node` (its first node when
    /// `None`). Answers false when `rd` does not exist.
    pub fn set_in_use(&self, rd: &str, node: Option<&str>) -> bool {
        let mut store = self.store();
        let Some(rsc) = store.get_mut(rd) else {
            return false;
        };
        let node = node
            .map(str::to_owned)
            .or_else(|| rsc.nodes.first().cloned())
            .unwrap_or_else(|| DEMO_NODES[0].to_owned());
        rsc.in_use_on = Some(node);
        true
    }

    /// Clears the in-use mark of `rd`. Answers false when `rd` does not exist.
    pub fn clear_in_use(&self, rd: &str) -> bool {
        let mut store = self.store();
        let Some(rsc) = store.get_mut(rd) else {
            return false;
        };
        rsc.in_use_on = None;
        true
    }

    /// What exists now: resource definitions, snapshots, in-use marks,
    /// rollbacks done, fault rules.
    pub fn state(&self) -> SimState {
        SimState::of(&self.store(), self.faults.list())
    }

    /// Forgets every object and fault rule.
    pub fn reset(&self) {
        self.store().clear();
        self.faults.clear();
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().expect("linstor simulator state lock")
    }
}

/// The REST v1 API and the `/sim/` admin API of `sim`.
pub fn router(sim: Arc<LinstorSim>) -> Router {
    rest::routes(sim.clone()).merge(admin::routes(sim))
}
