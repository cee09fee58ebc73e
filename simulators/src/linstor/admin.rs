//! The admin API under `/sim/` (JSON in, JSON out; bad input is a 400
//! with `{"error": "..."}`):
//!
//! - `POST /sim/seed`: add resource definitions ([`SeedRequest`]);
//! - `GET /sim/state`: what exists ([`SimState`]);
//! - `POST|DELETE /sim/resource-definitions/{rd}/in-use`: mark or unmark a
//!   resource in use (body `{"node": "..."}` optional);
//! - `POST|GET|DELETE /sim/faults`: add a [`FaultRule`], list, clear;
//! - `POST /sim/reset`: forget everything.
//!
//! Fault operations: `controller-version`, `resource-definition-list`,
//! `resource-definition-get`, `snapshot-list`, `snapshot-get`,
//! `snapshot-create`, `snapshot-delete`, `snapshot-rollback` (`*` for all).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::LinstorSim;
use super::store::{self, FLAG_SUCCESSFUL, ResourceDefinition, Snapshot, Store, VolumeDefinition};
use crate::faults::FaultRule;

/// Body of `POST /sim/seed`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedRequest {
    pub resource_definitions: Vec<SeedResourceDefinition>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedResourceDefinition {
    pub name: String,
    /// Nodes with a diskful resource; default: the demo satellites.
    #[serde(default = "default_nodes")]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub volume_definitions: Vec<SeedVolume>,
    /// Existing snapshots, oldest first.
    #[serde(default)]
    pub snapshots: Vec<SeedSnapshot>,
    /// Seed the resource as in use on this node.
    #[serde(default)]
    pub in_use_on: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedVolume {
    /// Default: the next free number.
    #[serde(default)]
    pub volume_number: Option<u32>,
    pub size_kib: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSnapshot {
    pub name: String,
    /// Default `["SUCCESSFUL"]`; e.g. `["FAILED_DEPLOYMENT"]` or `[]` (being taken).
    #[serde(default = "default_flags")]
    pub flags: Vec<String>,
}

fn default_nodes() -> Vec<String> {
    super::DEMO_NODES.iter().map(|n| (*n).to_owned()).collect()
}

fn default_flags() -> Vec<String> {
    vec![FLAG_SUCCESSFUL.to_owned()]
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SeedError(String);

impl SeedRequest {
    pub(super) fn into_resource_definitions(self) -> Result<Vec<ResourceDefinition>, SeedError> {
        let mut seen = BTreeSet::new();
        let mut rds = Vec::new();
        for seed in self.resource_definitions {
            if !seen.insert(seed.name.to_ascii_uppercase()) {
                return Err(SeedError(format!(
                    "resource definition {:?} is listed twice",
                    seed.name
                )));
            }
            rds.push(seed.into_resource_definition()?);
        }
        Ok(rds)
    }
}

impl SeedResourceDefinition {
    fn into_resource_definition(self) -> Result<ResourceDefinition, SeedError> {
        let invalid = |what: &str, name: &str| SeedError(format!("invalid {what} name {name:?}"));
        if !store::is_valid_name(&self.name) {
            return Err(invalid("resource definition", &self.name));
        }
        if let Some(node) = self.nodes.iter().find(|n| !store::is_valid_name(n)) {
            return Err(invalid("node", node));
        }
        let mut volumes: Vec<VolumeDefinition> = Vec::new();
        for volume in &self.volume_definitions {
            let number = volume.volume_number.unwrap_or_else(|| {
                volumes
                    .iter()
                    .map(|v| v.volume_number + 1)
                    .max()
                    .unwrap_or(0)
            });
            if volumes.iter().any(|v| v.volume_number == number) {
                return Err(SeedError(format!(
                    "{}: volume number {number} is listed twice",
                    self.name
                )));
            }
            if volume.size_kib == 0 {
                return Err(SeedError(format!(
                    "{}: volume {number} has size_kib 0",
                    self.name
                )));
            }
            volumes.push(VolumeDefinition {
                volume_number: number,
                size_kib: volume.size_kib,
                uuid: Uuid::new_v4(),
            });
        }
        let mut snapshots: Vec<Snapshot> = Vec::new();
        for seed in &self.snapshots {
            if !store::is_valid_name(&seed.name) {
                return Err(invalid("snapshot", &seed.name));
            }
            if snapshots
                .iter()
                .any(|s| s.name.eq_ignore_ascii_case(&seed.name))
            {
                return Err(SeedError(format!(
                    "{}: snapshot {:?} is listed twice",
                    self.name, seed.name
                )));
            }
            snapshots.push(Snapshot::new(
                &seed.name,
                &self.nodes,
                &volumes,
                seed.flags.clone(),
            ));
        }
        Ok(ResourceDefinition {
            name: self.name,
            uuid: Uuid::new_v4(),
            drbd_secret: Uuid::new_v4().simple().to_string()[..20].to_owned(),
            nodes: self.nodes,
            volumes,
            in_use_on: self.in_use_on,
            snapshots,
            rollbacks: Vec::new(),
        })
    }
}

/// Body of `GET /sim/state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimState {
    pub resource_definitions: Vec<RdState>,
    pub faults: Vec<FaultRule>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RdState {
    pub name: String,
    pub uuid: Uuid,
    pub nodes: Vec<String>,
    pub volume_definitions: Vec<VolumeState>,
    pub in_use: bool,
    pub in_use_on: Option<String>,
    pub snapshots: Vec<SnapshotState>,
    pub rollback_count: usize,
    /// Every rollback done, oldest first.
    pub rollbacks: Vec<RollbackState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeState {
    pub volume_number: u32,
    pub size_kib: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotState {
    pub name: String,
    pub uuid: Uuid,
    pub flags: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackState {
    pub snapshot: String,
    pub at: DateTime<Utc>,
}

impl SimState {
    pub(super) fn of(store: &Store, faults: Vec<FaultRule>) -> Self {
        let resource_definitions = store
            .all()
            .map(|rd| RdState {
                name: rd.name.clone(),
                uuid: rd.uuid,
                nodes: rd.nodes.clone(),
                volume_definitions: rd
                    .volumes
                    .iter()
                    .map(|v| VolumeState {
                        volume_number: v.volume_number,
                        size_kib: v.size_kib,
                    })
                    .collect(),
                in_use: rd.in_use_on.is_some(),
                in_use_on: rd.in_use_on.clone(),
                snapshots: rd
                    .snapshots
                    .iter()
                    .map(|s| SnapshotState {
                        name: s.name.clone(),
                        uuid: s.uuid,
                        flags: s.flags.clone(),
                        created_at: s.created_at,
                    })
                    .collect(),
                rollback_count: rd.rollbacks.len(),
                rollbacks: rd
                    .rollbacks
                    .iter()
                    .map(|r| RollbackState {
                        snapshot: r.snapshot.clone(),
                        at: r.at,
                    })
                    .collect(),
            })
            .collect();
        Self {
            resource_definitions,
            faults,
        }
    }

    /// The state of resource definition `rd` (case-insensitive).
    pub fn resource_definition(&self, rd: &str) -> Option<&RdState> {
        self.resource_definitions
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(rd))
    }
}

type Sim = State<Arc<LinstorSim>>;

pub(super) fn routes(sim: Arc<LinstorSim>) -> Router {
    Router::new()
        .route("/sim/seed", post(seed))
        .route("/sim/state", get(state))
        .route(
            "/sim/resource-definitions/{rd}/in-use",
            post(mark_in_use).delete(clear_in_use),
        )
        .route(
            "/sim/faults",
            post(add_fault).get(list_faults).delete(clear_faults),
        )
        .route("/sim/reset", post(reset))
        .with_state(sim)
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": message.into() })),
    )
        .into_response()
}

fn not_found(rd: &str) -> Response {
    let message = format!("resource definition {rd:?} does not exist");
    (StatusCode::NOT_FOUND, Json(json!({ "error": message }))).into_response()
}

/// Parses a JSON body; the error says why it does not fit.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|err| format!("invalid request body: {err}"))
}

async fn seed(State(sim): Sim, body: Bytes) -> Response {
    let request: SeedRequest = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    match sim.seed(request) {
        Ok(count) => Json(json!({ "seeded": count })).into_response(),
        Err(err) => bad_request(err.to_string()),
    }
}

async fn state(State(sim): Sim) -> Json<SimState> {
    Json(sim.state())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InUseRequest {
    node: Option<String>,
}

async fn mark_in_use(State(sim): Sim, Path(rd): Path<String>, body: Bytes) -> Response {
    let request: InUseRequest = if body.iter().all(u8::is_ascii_whitespace) {
        InUseRequest::default()
    } else {
        match parse(&body) {
            Ok(request) => request,
            Err(message) => return bad_request(message),
        }
    };
    if !sim.set_in_use(&rd, request.node.as_deref()) {
        return not_found(&rd);
    }
    Json(json!({ "resource_definition": rd, "in_use": true })).into_response()
}

async fn clear_in_use(State(sim): Sim, Path(rd): Path<String>) -> Response {
    if !sim.clear_in_use(&rd) {
        return not_found(&rd);
    }
    Json(json!({ "resource_definition": rd, "in_use": false })).into_response()
}

async fn add_fault(State(sim): Sim, body: Bytes) -> Response {
    let rule: FaultRule = match parse(&body) {
        Ok(rule) => rule,
        Err(message) => return bad_request(message),
    };
    if let Err(err) = sim.faults().add(rule) {
        return bad_request(err.to_string());
    }
    (
        StatusCode::CREATED,
        Json(json!({ "faults": sim.faults().list() })),
    )
        .into_response()
}

async fn list_faults(State(sim): Sim) -> Json<serde_json::Value> {
    Json(json!({ "faults": sim.faults().list() }))
}

async fn clear_faults(State(sim): Sim) -> Json<serde_json::Value> {
    sim.faults().clear();
    Json(json!({ "faults": [] }))
}

async fn reset(State(sim): Sim) -> Json<serde_json::Value> {
    sim.reset();
    Json(json!({ "reset": true }))
}
