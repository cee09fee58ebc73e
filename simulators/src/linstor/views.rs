//! The JSON objects the REST API answers, shaped after the schemas of
//! LINBIT's OpenAPI document (`ResourceDefinition`, `VolumeDefinition`,
//! `Snapshot`, `SnapshotNode`, `SnapshotVolumeNode`,
//! `SnapshotVolumeDefinition`, `ControllerVersion`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::store::{ResourceDefinition, Snapshot};

type Props = BTreeMap<String, String>;

pub const CONTROLLER_VERSION: &str = "1.32.3";
pub const REST_API_VERSION: &str = "1.28.0";
const GIT_HASH: &str = "5b1a1e4c2d3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b";
const BUILD_TIME: &str = "2025-06-02T09:12:44+00:00";
const DEFAULT_RESOURCE_GROUP: &str = "DfltRscGrp";
const FIRST_DRBD_PORT: u32 = 7000;
const FIRST_DRBD_MINOR: u32 = 1000;

#[derive(Debug, Serialize)]
pub struct ControllerVersionView {
    pub version: &'static str,
    pub git_hash: &'static str,
    pub build_time: &'static str,
    pub rest_api_version: &'static str,
}

pub fn controller_version() -> ControllerVersionView {
    ControllerVersionView {
        version: CONTROLLER_VERSION,
        git_hash: GIT_HASH,
        build_time: BUILD_TIME,
        rest_api_version: REST_API_VERSION,
    }
}

#[derive(Debug, Serialize)]
pub struct ResourceDefinitionView {
    name: String,
    props: Props,
    flags: Vec<String>,
    layer_data: Vec<LayerView>,
    uuid: String,
    resource_group_name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_definitions: Option<Vec<VolumeDefinitionView>>,
}

#[derive(Debug, Serialize)]
struct LayerView {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct VolumeDefinitionView {
    volume_number: u32,
    size_kib: u64,
    props: Props,
    flags: Vec<String>,
    layer_data: Vec<LayerView>,
    uuid: String,
}

/// `index` numbers the resource definition (for its DRBD port and minors).
pub fn resource_definition(
    rd: &ResourceDefinition,
    index: usize,
    with_volumes: bool,
) -> ResourceDefinitionView {
    let index = u32::try_from(index).unwrap_or(0);
    let drbd = serde_json::json!({
        "resource_name_suffix": "",
        "peer_slots": 7,
        "al_stripes": 1,
        "al_stripe_size_kib": 32,
        "port": FIRST_DRBD_PORT + index,
        "transport_type": "IP",
        "secret": rd.drbd_secret,
        "down": false,
    });
    let volumes = rd
        .volumes
        .iter()
        .map(|v| VolumeDefinitionView {
            volume_number: v.volume_number,
            size_kib: v.size_kib,
            props: Props::new(),
            flags: Vec::new(),
            layer_data: vec![
                LayerView {
                    kind: "DRBD",
                    data: Some(serde_json::json!({
                        "resource_name_suffix": "",
                        "volume_number": v.volume_number,
                        "minor_number": FIRST_DRBD_MINOR + index * 16 + v.volume_number,
                    })),
                },
                LayerView {
                    kind: "STORAGE",
                    data: None,
                },
            ],
            uuid: v.uuid.to_string(),
        })
        .collect();
    ResourceDefinitionView {
        name: rd.name.clone(),
        props: Props::new(),
        flags: Vec::new(),
        layer_data: vec![
            LayerView {
                kind: "DRBD",
                data: Some(drbd),
            },
            LayerView {
                kind: "STORAGE",
                data: None,
            },
        ],
        uuid: rd.uuid.to_string(),
        resource_group_name: DEFAULT_RESOURCE_GROUP,
        volume_definitions: with_volumes.then_some(volumes),
    }
}

#[derive(Debug, Serialize)]
pub struct SnapshotView {
    name: String,
    resource_name: String,
    nodes: Vec<String>,
    props: Props,
    snapshot_definition_props: Props,
    resource_definition_props: Props,
    flags: Vec<String>,
    volume_definitions: Vec<SnapshotVolumeDefinitionView>,
    uuid: String,
    snapshots: Vec<SnapshotNodeView>,
}

#[derive(Debug, Serialize)]
struct SnapshotVolumeDefinitionView {
    volume_number: u32,
    size_kib: u64,
    snapshot_volume_definition_props: Props,
    volume_definition_props: Props,
}

#[derive(Debug, Serialize)]
struct SnapshotNodeView {
    snapshot_name: String,
    node_name: String,
    create_timestamp: i64,
    flags: Vec<String>,
    uuid: String,
    snapshot_props: Props,
    resource_props: Props,
    snapshot_volumes: Vec<SnapshotVolumeNodeView>,
}

#[derive(Debug, Serialize)]
struct SnapshotVolumeNodeView {
    uuid: String,
    vlm_nr: u32,
    props: Props,
    snapshot_volume_props: Props,
    volume_props: Props,
}

pub fn snapshot(rd: &ResourceDefinition, snap: &Snapshot) -> SnapshotView {
    SnapshotView {
        name: snap.name.clone(),
        resource_name: rd.name.clone(),
        nodes: snap.nodes.iter().map(|n| n.node.clone()).collect(),
        props: Props::new(),
        snapshot_definition_props: Props::new(),
        resource_definition_props: Props::new(),
        flags: snap.flags.clone(),
        volume_definitions: snap
            .volumes
            .iter()
            .map(|v| SnapshotVolumeDefinitionView {
                volume_number: v.volume_number,
                size_kib: v.size_kib,
                snapshot_volume_definition_props: Props::new(),
                volume_definition_props: Props::new(),
            })
            .collect(),
        uuid: snap.uuid.to_string(),
        snapshots: snap
            .nodes
            .iter()
            .map(|n| SnapshotNodeView {
                snapshot_name: snap.name.clone(),
                node_name: n.node.clone(),
                create_timestamp: snap.created_at.timestamp_millis(),
                flags: Vec::new(),
                uuid: n.uuid.to_string(),
                snapshot_props: Props::new(),
                resource_props: Props::new(),
                snapshot_volumes: snap
                    .volumes
                    .iter()
                    .zip(&n.volume_uuids)
                    .map(|(v, uuid)| SnapshotVolumeNodeView {
                        uuid: uuid.to_string(),
                        vlm_nr: v.volume_number,
                        props: Props::new(),
                        snapshot_volume_props: Props::new(),
                        volume_props: Props::new(),
                    })
                    .collect(),
            })
            .collect(),
    }
}
