//! The controller's objects and the rules of the calls on them, in the
//! order linstor-server checks them. Names are matched case-insensitively
//! and reported as they were given. Operations answer the controller's
//! `ApiCallRc` entries (context masks are added by the caller).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::rc::{self, ApiCallRc};

pub const FLAG_SUCCESSFUL: &str = "SUCCESSFUL";

#[derive(Debug, Clone)]
pub struct ResourceDefinition {
    pub name: String,
    pub uuid: Uuid,
    pub drbd_secret: String,
    /// Nodes with a diskful resource of this definition.
    pub nodes: Vec<String>,
    pub volumes: Vec<VolumeDefinition>,
    /// The node on which the resource is in use (DRBD primary, mounted).
    pub in_use_on: Option<String>,
    /// Oldest first; the last one is the most recent.
    pub snapshots: Vec<Snapshot>,
    pub rollbacks: Vec<Rollback>,
}

#[derive(Debug, Clone)]
pub struct VolumeDefinition {
    pub volume_number: u32,
    pub size_kib: u64,
    pub uuid: Uuid,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub name: String,
    pub uuid: Uuid,
    pub flags: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub nodes: Vec<SnapshotOnNode>,
    pub volumes: Vec<VolumeDefinition>,
}

#[derive(Debug, Clone)]
pub struct SnapshotOnNode {
    pub node: String,
    pub uuid: Uuid,
    /// One per volume of the snapshot, in the same order.
    pub volume_uuids: Vec<Uuid>,
}

#[derive(Debug, Clone)]
pub struct Rollback {
    pub snapshot: String,
    pub at: DateTime<Utc>,
}

impl Snapshot {
    pub fn new(
        name: &str,
        nodes: &[String],
        volumes: &[VolumeDefinition],
        flags: Vec<String>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            uuid: Uuid::new_v4(),
            flags,
            created_at: Utc::now(),
            nodes: nodes
                .iter()
                .map(|node| SnapshotOnNode {
                    node: node.clone(),
                    uuid: Uuid::new_v4(),
                    volume_uuids: volumes.iter().map(|_| Uuid::new_v4()).collect(),
                })
                .collect(),
            volumes: volumes.to_vec(),
        }
    }

    pub fn is_successful(&self) -> bool {
        self.flags.iter().any(|f| f == FLAG_SUCCESSFUL)
    }
}

/// LINSTOR's naming rule: 2-48 characters, a letter or `_` first, then
/// letters, digits, `_` and `-`.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    (2..=48).contains(&name.chars().count())
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The error entry of a refused call.
pub type Refusal = Box<ApiCallRc>;

fn refuse<T>(entry: ApiCallRc) -> Result<T, Refusal> {
    Err(Box::new(entry))
}

fn invalid_rsc_name(rd: &str) -> ApiCallRc {
    ApiCallRc::new(
        rc::FAIL_INVLD_RSC_NAME,
        format!("The given resource name '{rd}' is invalid."),
    )
}

fn invalid_snapshot_name(snap: &str) -> ApiCallRc {
    ApiCallRc::new(
        rc::FAIL_INVLD_SNAPSHOT_NAME,
        format!("The given snapshot name '{snap}' is invalid."),
    )
}

/// The answer of a lookup through `loadRscDfn(name, failIfNull=true)`.
pub fn rd_not_found(rd: &str) -> ApiCallRc {
    ApiCallRc::new(
        rc::FAIL_NOT_FOUND_RSC_DFN,
        format!("Resource definition '{rd}' not found."),
    )
    .with_cause(format!(
        "The specified resource definition '{rd}' could not be found in the database"
    ))
    .with_correction(format!(
        "Create a resource definition with the name '{rd}' first."
    ))
}

/// One `MODIFIED` entry per node, as the controller reports satellite steps.
fn per_node(entries: &mut Vec<ApiCallRc>, nodes: &[String], message: impl Fn(&str) -> String) {
    entries.extend(
        nodes
            .iter()
            .map(|n| ApiCallRc::new(rc::MODIFIED, message(n))),
    );
}

/// All resource definitions, in name order.
#[derive(Debug, Default)]
pub struct Store {
    /// Keyed by the upper-cased name, as the controller keys them.
    rds: std::collections::BTreeMap<String, ResourceDefinition>,
}

impl Store {
    pub fn clear(&mut self) {
        self.rds.clear();
    }

    /// Adds `rd`, replacing one of the same name.
    pub fn put(&mut self, rd: ResourceDefinition) {
        self.rds.insert(rd.name.to_ascii_uppercase(), rd);
    }

    pub fn all(&self) -> impl Iterator<Item = &ResourceDefinition> {
        self.rds.values()
    }

    pub fn get(&self, rd: &str) -> Option<&ResourceDefinition> {
        self.rds.get(&rd.to_ascii_uppercase())
    }

    pub fn get_mut(&mut self, rd: &str) -> Option<&mut ResourceDefinition> {
        self.rds.get_mut(&rd.to_ascii_uppercase())
    }

    /// The position of `rd` in name order (numbers its DRBD port).
    pub fn index_of(&self, rd: &str) -> usize {
        let key = rd.to_ascii_uppercase();
        self.rds.keys().position(|k| *k == key).unwrap_or(0)
    }

    /// Registers snapshot `snap` of `rd` on `nodes` (all diskful nodes when
    /// empty), with `flags`. Answers the new snapshot's uuid.
    pub fn create_snapshot(
        &mut self,
        rd: &str,
        snap: &str,
        nodes: &[String],
        flags: Vec<String>,
    ) -> Result<(Uuid, Vec<ApiCallRc>), Refusal> {
        if !is_valid_name(rd) {
            return refuse(invalid_rsc_name(rd));
        }
        let Some(rsc) = self.get_mut(rd) else {
            return refuse(rd_not_found(rd));
        };
        if !is_valid_name(snap) {
            return refuse(invalid_snapshot_name(snap));
        }
        if rsc
            .snapshots
            .iter()
            .any(|s| s.name.eq_ignore_ascii_case(snap))
        {
            return refuse(ApiCallRc::new(
                rc::FAIL_EXISTS_SNAPSHOT_DFN,
                format!(
                    "A snapshot definition with the name '{snap}' already exists in resource definition '{}'.",
                    rsc.name
                ),
            ));
        }
        let targets = if nodes.is_empty() {
            rsc.nodes.clone()
        } else {
            let mut picked = Vec::new();
            for node in nodes {
                match rsc.nodes.iter().find(|n| n.eq_ignore_ascii_case(node)) {
                    Some(n) => picked.push(n.clone()),
                    None => {
                        return refuse(ApiCallRc::new(
                            rc::FAIL_NOT_FOUND_RSC,
                            format!("Resource '{}' on node '{node}' not found.", rsc.name),
                        ));
                    }
                }
            }
            picked
        };
        if targets.is_empty() {
            return refuse(ApiCallRc::new(
                rc::FAIL_NOT_FOUND_RSC,
                "No resources found for snapshotting",
            ));
        }
        let snapshot = Snapshot::new(snap, &targets, &rsc.volumes, flags);
        let uuid = snapshot.uuid;
        let mut entries = vec![
            ApiCallRc::new(
                rc::CREATED,
                format!(
                    "New snapshot '{snap}' of resource '{}' registered.",
                    rsc.name
                ),
            )
            .with_details(format!(
                "Snapshot '{snap}' of resource '{}' UUID is: {uuid}",
                rsc.name
            )),
        ];
        let name = &rsc.name;
        per_node(&mut entries, &targets, |n| {
            format!("Suspended IO of '{name}' on '{n}' for snapshot")
        });
        per_node(&mut entries, &targets, |n| {
            format!("Took snapshot of '{name}' on '{n}'")
        });
        per_node(&mut entries, &targets, |n| {
            format!("Resumed IO of '{name}' on '{n}' after snapshot")
        });
        rsc.snapshots.push(snapshot);
        Ok((uuid, entries))
    }

    /// Marks the snapshot `uuid` of `rd` successful (the satellites are done).
    pub fn complete_snapshot(&mut self, rd: &str, uuid: Uuid) {
        if let Some(snapshot) = self
            .get_mut(rd)
            .and_then(|r| r.snapshots.iter_mut().find(|s| s.uuid == uuid))
            && !snapshot.is_successful()
        {
            snapshot.flags.push(FLAG_SUCCESSFUL.to_owned());
        }
    }

    pub fn delete_snapshot(&mut self, rd: &str, snap: &str) -> Result<Vec<ApiCallRc>, Refusal> {
        if !is_valid_name(rd) {
            return refuse(invalid_rsc_name(rd));
        }
        if !is_valid_name(snap) {
            return refuse(invalid_snapshot_name(snap));
        }
        let Some(rsc) = self.get_mut(rd) else {
            return refuse(rd_not_found(rd));
        };
        let Some(position) = rsc
            .snapshots
            .iter()
            .position(|s| s.name.eq_ignore_ascii_case(snap))
        else {
            return Ok(vec![ApiCallRc::new(
                rc::WARN_NOT_FOUND,
                format!(
                    "Snapshot definition '{snap}' of resource '{}' not found.",
                    rsc.name
                ),
            )]);
        };
        let removed = rsc.snapshots.remove(position);
        let mut entries = Vec::new();
        for node in &removed.nodes {
            entries.push(ApiCallRc::new(
                rc::DELETED,
                format!(
                    "Marked snapshot for deletion snapshot '{}' of resource '{}' on node '{}'",
                    removed.name, rsc.name, node.node
                ),
            ));
        }
        for node in &removed.nodes {
            entries.push(ApiCallRc::new(
                rc::DELETED,
                format!(
                    "Deleted snapshot '{}' of '{}' on '{}'",
                    removed.name, rsc.name, node.node
                ),
            ));
        }
        entries.push(
            ApiCallRc::new(
                rc::DELETED,
                format!(
                    "Snapshot definition '{}' of resource '{}' deleted.",
                    removed.name, rsc.name
                ),
            )
            .with_details(format!("Snapshot definition UUID was: {}", removed.uuid)),
        );
        Ok(entries)
    }

    pub fn rollback(
        &mut self,
        rd: &str,
        snap: &str,
        require_most_recent: bool,
    ) -> Result<Vec<ApiCallRc>, Refusal> {
        if !is_valid_name(rd) {
            return refuse(invalid_rsc_name(rd));
        }
        if !is_valid_name(snap) {
            return refuse(invalid_snapshot_name(snap));
        }
        let Some(rsc) = self.get_mut(rd) else {
            return refuse(rd_not_found(rd));
        };
        let Some(position) = rsc
            .snapshots
            .iter()
            .position(|s| s.name.eq_ignore_ascii_case(snap))
        else {
            return refuse(ApiCallRc::new(
                rc::FAIL_NOT_FOUND_SNAPSHOT_DFN,
                format!("Snapshot '{snap}' of resource '{}' not found.", rsc.name),
            ));
        };
        if require_most_recent && position + 1 != rsc.snapshots.len() {
            return refuse(ApiCallRc::new(
                rc::FAIL_EXISTS_SNAPSHOT_DFN,
                "Rollback is only allowed with the most recent snapshot",
            ));
        }
        let target = &rsc.snapshots[position];
        if !target.is_successful() {
            return refuse(ApiCallRc::new(
                rc::FAIL_UNKNOWN_ERROR,
                "Unable to roll back to failed snapshot",
            ));
        }
        if let Some(node) = &rsc.in_use_on {
            return refuse(
                ApiCallRc::new(
                    rc::FAIL_IN_USE,
                    format!("Resource '{}' on node '{node}' is still in use.", rsc.name),
                )
                .with_cause("Resource is mounted/in use.")
                .with_correction(format!(
                    "Un-mount resource '{}' on the node '{node}'.",
                    rsc.name
                )),
            );
        }
        let name = target.name.clone();
        let mut entries = vec![ApiCallRc::new(
            rc::MODIFIED,
            format!(
                "Snapshot '{name}' of resource '{}' marked down for rollback.",
                rsc.name
            ),
        )];
        let rsc_name = &rsc.name;
        per_node(&mut entries, &rsc.nodes, |n| {
            format!("Deactivated resource '{rsc_name}' on '{n}' for rollback")
        });
        per_node(&mut entries, &rsc.nodes, |n| {
            format!("Rolled resource '{rsc_name}' back on '{n}'")
        });
        per_node(&mut entries, &rsc.nodes, |n| {
            format!("Re-activated resource '{rsc_name}' on '{n}' after rollback")
        });
        rsc.rollbacks.push(Rollback {
            snapshot: name,
            at: Utc::now(),
        });
        Ok(entries)
    }
}
