//! The objects the LINSTOR REST API returns (schemas `ResourceDefinition`,
//! `VolumeDefinition`, `Snapshot`, `SnapshotNode`, `ControllerVersion` of
//! LINBIT's OpenAPI document). Every field is optional there, so missing
//! fields decode to their defaults; unknown fields are ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Snapshot definition flag set once the snapshot is complete on all nodes.
pub const FLAG_SUCCESSFUL: &str = "SUCCESSFUL";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControllerVersion {
    pub version: String,
    pub git_hash: String,
    pub build_time: String,
    pub rest_api_version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceDefinition {
    pub name: String,
    pub uuid: Option<String>,
    pub flags: Vec<String>,
    pub props: BTreeMap<String, String>,
    pub resource_group_name: Option<String>,
    /// Present in list answers (`with_volume_definitions=true`), absent
    /// from the single-object GET.
    pub volume_definitions: Vec<VolumeDefinition>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeDefinition {
    pub volume_number: Option<u32>,
    pub size_kib: u64,
    pub flags: Vec<String>,
    pub uuid: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    pub name: String,
    pub resource_name: String,
    pub nodes: Vec<String>,
    pub flags: Vec<String>,
    pub uuid: Option<String>,
    pub volume_definitions: Vec<SnapshotVolumeDefinition>,
    /// One entry per node the snapshot was taken on.
    pub snapshots: Vec<SnapshotNode>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotVolumeDefinition {
    pub volume_number: Option<u32>,
    pub size_kib: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotNode {
    pub snapshot_name: String,
    pub node_name: String,
    /// Milliseconds since the Unix epoch.
    pub create_timestamp: Option<i64>,
    pub flags: Vec<String>,
    pub uuid: Option<String>,
}

impl Snapshot {
    /// The snapshot is complete and usable (flag `SUCCESSFUL`).
    pub fn is_successful(&self) -> bool {
        has_flag(&self.flags, FLAG_SUCCESSFUL)
    }

    /// The snapshot failed or is going away; it will never become usable.
    pub fn has_failed(&self) -> bool {
        flags_say_failed(&self.flags)
    }
}

fn has_flag(flags: &[String], flag: &str) -> bool {
    flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
}

/// `FAILED_DEPLOYMENT`, `FAILED_DISCONNECT` or `DELETE`: a snapshot in this
/// state will not turn successful by waiting.
pub(crate) fn flags_say_failed(flags: &[String]) -> bool {
    flags.iter().any(|f| {
        let f = f.to_ascii_uppercase();
        f.starts_with("FAILED") || f == "DELETE"
    })
}

/// The result of a retry-safe snapshot creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotCreation {
    /// This call took the snapshot.
    Created,
    /// A snapshot of that name was already there and successful (an
    /// earlier attempt of the same step took it).
    AlreadyPresent,
}

/// The result of an idempotent snapshot deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotDeletion {
    Deleted,
    /// The controller reported `WARN_NOT_FOUND`: nothing to delete.
    AlreadyAbsent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_snapshot_and_reads_its_flags() {
        let body = r#"{"name":"snap1","resource_name":"rsc1","nodes":["n1"],"flags":["SUCCESSFUL"],
            "uuid":"2e9ee3b4-2f3a-4f63-9a39-3a3f3a3f3a3f","volume_definitions":[{"volume_number":0,"size_kib":1024}],
            "snapshots":[{"snapshot_name":"snap1","node_name":"n1","create_timestamp":1700000000000,"flags":[]}],
            "props":{"x":"y"}}"#;
        let snap: Snapshot = serde_json::from_str(body).unwrap();
        assert!(snap.is_successful());
        assert!(!snap.has_failed());
        assert_eq!(snap.snapshots[0].create_timestamp, Some(1_700_000_000_000));
        let failed = Snapshot {
            flags: vec!["FAILED_DEPLOYMENT".into()],
            ..Snapshot::default()
        };
        assert!(failed.has_failed());
        assert!(!failed.is_successful());
    }
}
