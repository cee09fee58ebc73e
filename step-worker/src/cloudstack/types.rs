//! The objects the CloudStack API returns, as far as the failover uses them.
//! Field names follow the wire (`displayname`, `serviceofferingid`, ...);
//! unknown fields are ignored and everything the server may leave out is an
//! `Option` or defaults, so responses of other CloudStack versions decode.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A VM state (`VirtualMachine.State`); states this client does not know
/// are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum VmState {
    Running,
    Stopped,
    Starting,
    Stopping,
    Destroyed,
    Expunging,
    Migrating,
    Error,
    Other(String),
}

impl VmState {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Running => "Running",
            Self::Stopped => "Stopped",
            Self::Starting => "Starting",
            Self::Stopping => "Stopping",
            Self::Destroyed => "Destroyed",
            Self::Expunging => "Expunging",
            Self::Migrating => "Migrating",
            Self::Error => "Error",
            Self::Other(s) => s,
        }
    }

    /// A state the VM leaves on its own when the job behind it ends.
    pub fn is_transitional(&self) -> bool {
        matches!(self, Self::Starting | Self::Stopping | Self::Migrating)
    }
}

impl From<String> for VmState {
    fn from(s: String) -> Self {
        match s.as_str() {
            "Running" => Self::Running,
            "Stopped" => Self::Stopped,
            "Starting" => Self::Starting,
            "Stopping" => Self::Stopping,
            "Destroyed" => Self::Destroyed,
            "Expunging" => Self::Expunging,
            "Migrating" => Self::Migrating,
            "Error" => Self::Error,
            _ => Self::Other(s),
        }
    }
}

impl From<VmState> for String {
    fn from(s: VmState) -> Self {
        s.as_str().to_owned()
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A network interface of a VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Nic {
    pub id: String,
    #[serde(rename = "networkid")]
    pub network_id: String,
    #[serde(rename = "networkname")]
    pub network_name: Option<String>,
    #[serde(rename = "ipaddress")]
    pub ip_address: Option<String>,
    #[serde(rename = "macaddress")]
    pub mac_address: Option<String>,
    #[serde(rename = "isdefault")]
    pub is_default: bool,
    pub gateway: Option<String>,
    pub netmask: Option<String>,
}

/// A VM (`UserVmResponse`, key `virtualmachine`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VirtualMachine {
    pub id: String,
    pub name: String,
    #[serde(rename = "displayname")]
    pub display_name: Option<String>,
    pub state: Option<VmState>,
    #[serde(rename = "zoneid")]
    pub zone_id: Option<String>,
    #[serde(rename = "zonename")]
    pub zone_name: Option<String>,
    #[serde(rename = "serviceofferingid")]
    pub service_offering_id: Option<String>,
    #[serde(rename = "serviceofferingname")]
    pub service_offering_name: Option<String>,
    #[serde(rename = "templateid")]
    pub template_id: Option<String>,
    #[serde(rename = "templatename")]
    pub template_name: Option<String>,
    #[serde(rename = "cpunumber")]
    pub cpu_number: Option<u32>,
    #[serde(rename = "cpuspeed")]
    pub cpu_speed: Option<u32>,
    /// MiB.
    pub memory: Option<u64>,
    pub nic: Vec<Nic>,
    #[serde(rename = "rootdeviceid")]
    pub root_device_id: Option<u32>,
    #[serde(rename = "instancename")]
    pub instance_name: Option<String>,
    pub hypervisor: Option<String>,
    #[serde(rename = "hostid")]
    pub host_id: Option<String>,
    pub created: Option<String>,
    pub details: BTreeMap<String, Value>,
}

impl VirtualMachine {
    pub fn state(&self) -> Option<&VmState> {
        self.state.as_ref()
    }

    /// The default NIC, or the first one.
    pub fn default_nic(&self) -> Option<&Nic> {
        self.nic.iter().find(|n| n.is_default).or(self.nic.first())
    }
}

/// `ROOT` or `DATADISK` (others kept verbatim).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum VolumeType {
    Root,
    DataDisk,
    Other(String),
}

impl VolumeType {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Root => "ROOT",
            Self::DataDisk => "DATADISK",
            Self::Other(s) => s,
        }
    }
}

impl From<String> for VolumeType {
    fn from(s: String) -> Self {
        match s.as_str() {
            "ROOT" => Self::Root,
            "DATADISK" => Self::DataDisk,
            _ => Self::Other(s),
        }
    }
}

impl From<VolumeType> for String {
    fn from(t: VolumeType) -> Self {
        t.as_str().to_owned()
    }
}

/// A volume (`VolumeResponse`, key `volume`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type")]
    pub volume_type: VolumeType,
    #[serde(default, rename = "deviceid")]
    pub device_id: Option<u32>,
    #[serde(default, rename = "virtualmachineid")]
    pub virtual_machine_id: Option<String>,
    #[serde(default, rename = "vmname")]
    pub vm_name: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    /// Bytes.
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default, rename = "zoneid")]
    pub zone_id: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
}

impl Volume {
    pub fn is_attached(&self) -> bool {
        self.virtual_machine_id.is_some()
    }
}

/// A guest network (`NetworkResponse`, key `network`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Network {
    pub id: String,
    pub name: String,
    #[serde(rename = "displaytext")]
    pub display_text: Option<String>,
    #[serde(rename = "zoneid")]
    pub zone_id: Option<String>,
    pub state: Option<String>,
    #[serde(rename = "type")]
    pub network_type: Option<String>,
    #[serde(rename = "traffictype")]
    pub traffic_type: Option<String>,
    pub cidr: Option<String>,
    pub gateway: Option<String>,
    pub netmask: Option<String>,
    #[serde(rename = "networkdomain")]
    pub network_domain: Option<String>,
    #[serde(rename = "canusefordeploy")]
    pub can_use_for_deploy: Option<bool>,
}

/// A compute offering (`ServiceOfferingResponse`, key `serviceoffering`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceOffering {
    pub id: String,
    pub name: String,
    #[serde(rename = "displaytext")]
    pub display_text: Option<String>,
    #[serde(rename = "cpunumber")]
    pub cpu_number: Option<u32>,
    #[serde(rename = "cpuspeed")]
    pub cpu_speed: Option<u32>,
    /// MiB.
    pub memory: Option<u64>,
    #[serde(rename = "iscustomized")]
    pub is_customized: Option<bool>,
}

/// A zone (`ZoneResponse`, key `zone`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Zone {
    pub id: String,
    pub name: String,
    #[serde(rename = "networktype")]
    pub network_type: Option<String>,
    #[serde(rename = "allocationstate")]
    pub allocation_state: Option<String>,
}

/// A template (`TemplateResponse`, key `template`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Template {
    pub id: String,
    pub name: String,
    #[serde(rename = "displaytext")]
    pub display_text: Option<String>,
    #[serde(rename = "zoneid")]
    pub zone_id: Option<String>,
    #[serde(rename = "isready")]
    pub is_ready: Option<bool>,
    #[serde(rename = "isfeatured")]
    pub is_featured: Option<bool>,
    #[serde(rename = "ostypename")]
    pub os_type_name: Option<String>,
    pub format: Option<String>,
    pub hypervisor: Option<String>,
    /// Bytes.
    pub size: Option<u64>,
}

/// A volume snapshot (`SnapshotResponse`, key `snapshot`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    pub id: String,
    pub name: Option<String>,
    #[serde(rename = "volumeid")]
    pub volume_id: Option<String>,
    #[serde(rename = "volumetype")]
    pub volume_type: Option<String>,
    #[serde(rename = "snapshottype")]
    pub snapshot_type: Option<String>,
    pub state: Option<String>,
    #[serde(rename = "zoneid")]
    pub zone_id: Option<String>,
    pub created: Option<String>,
}

/// A VM snapshot (`VMSnapshotResponse`, key `vmsnapshot` / `vmSnapshot`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VmSnapshot {
    pub id: String,
    pub name: Option<String>,
    #[serde(rename = "displayname")]
    pub display_name: Option<String>,
    #[serde(rename = "virtualmachineid")]
    pub virtual_machine_id: Option<String>,
    pub state: Option<String>,
    #[serde(rename = "type")]
    pub snapshot_type: Option<String>,
    pub current: Option<bool>,
    pub parent: Option<String>,
    pub created: Option<String>,
}

/// The outcome of an async job as `jobstatus` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Pending,
    Succeeded,
    Failed,
    Cancelled,
    Unknown(i64),
}

impl From<i64> for JobStatus {
    fn from(code: i64) -> Self {
        match code {
            0 => Self::Pending,
            1 => Self::Succeeded,
            2 => Self::Failed,
            3 => Self::Cancelled,
            other => Self::Unknown(other),
        }
    }
}

/// An async job (`AsyncJobResponse`): the answer of `queryAsyncJobResult`
/// and the entries of `listAsyncJobs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AsyncJob {
    #[serde(rename = "jobid")]
    pub job_id: String,
    #[serde(rename = "jobstatus")]
    pub job_status: i64,
    #[serde(rename = "jobprocstatus")]
    pub job_proc_status: Option<i64>,
    #[serde(rename = "jobresultcode")]
    pub job_result_code: Option<i64>,
    #[serde(rename = "jobresulttype")]
    pub job_result_type: Option<String>,
    #[serde(rename = "jobresult")]
    pub job_result: Option<Value>,
    #[serde(rename = "jobinstancetype")]
    pub job_instance_type: Option<String>,
    #[serde(rename = "jobinstanceid")]
    pub job_instance_id: Option<String>,
    pub cmd: Option<String>,
    pub created: Option<String>,
    pub completed: Option<String>,
    #[serde(rename = "accountid")]
    pub account_id: Option<String>,
    #[serde(rename = "userid")]
    pub user_id: Option<String>,
}

impl AsyncJob {
    pub fn status(&self) -> JobStatus {
        JobStatus::from(self.job_status)
    }

    /// The object under `key` of `jobresult` (matched case-insensitively):
    /// `virtualmachine`, `volume`, `snapshot`, `vmsnapshot`, ...
    pub fn result_object(&self, key: &str) -> Option<&Value> {
        let result = self.job_result.as_ref()?.as_object()?;
        result.get(key).or_else(|| {
            result
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
    }
}

/// What `deployVirtualMachine` is asked to create.
///
/// `custom_id` becomes the VM's UUID: it is what makes the create safe to
/// repeat (the client looks the VM up by it before and after creating).
#[derive(Debug, Clone, PartialEq)]
pub struct DeployVmRequest {
    pub zone_id: String,
    pub service_offering_id: String,
    pub template_id: String,
    /// The host name (letters, digits, `-`; at most 63 characters).
    pub name: Option<String>,
    pub display_name: Option<String>,
    /// The first network gets the default NIC.
    pub network_ids: Vec<String>,
    /// `false` creates the VM `Stopped` (to swap its root disk first).
    pub start_vm: bool,
    pub custom_id: Uuid,
    /// Sent as `details[0].<key>=<value>` (e.g. `cpuNumber`, `memory`).
    pub details: BTreeMap<String, String>,
}

/// Filters of `listVirtualMachines`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmFilter {
    pub id: Option<String>,
    pub name: Option<String>,
    pub state: Option<String>,
}

/// Filters of `listVolumes`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeFilter {
    pub id: Option<String>,
    pub virtual_machine_id: Option<String>,
    /// `ROOT` or `DATADISK`.
    pub volume_type: Option<String>,
}
