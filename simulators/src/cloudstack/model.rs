//! The simulator's in-memory world: what exists, and the small rules of
//! identity (UUIDs, removed ids, addresses) every command shares.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use chrono::Utc;
use failover_platform::cloudstack_signature::EXPIRES_FORMAT;
use serde::Serialize;

use super::jobs::Job;

/// The account every simulated entity belongs to (the root admin).
pub const ACCOUNT_NAME: &str = "admin";
pub const ACCOUNT_ID: &str = "a11ce000-0000-4000-8000-000000000001";
pub const USER_ID: &str = "a11ce000-0000-4000-8000-000000000002";
pub const DOMAIN_ID: &str = "a11ce000-0000-4000-8000-000000000003";
pub const NETWORK_DOMAIN: &str = "cs.sim.internal";
pub const GIB: u64 = 1024 * 1024 * 1024;

/// `2030-01-01T00:00:00+0000`, the timestamp format of every answer.
pub fn now_stamp() -> String {
    Utc::now().format(EXPIRES_FORMAT).to_string()
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36
}

/// `VirtualMachine.State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VmState {
    Stopped,
    Starting,
    Running,
    Stopping,
    Destroyed,
    Expunging,
    Error,
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeType {
    Root,
    DataDisk,
}

impl VolumeType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Root => "ROOT",
            Self::DataDisk => "DATADISK",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Zone {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Offering {
    pub id: String,
    pub name: String,
    pub cpunumber: u32,
    pub cpuspeed: u32,
    pub memory: u64,
    pub created: String,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub zone_id: String,
    pub featured: bool,
    pub os_type_name: String,
    pub size: u64,
    pub created: String,
}

#[derive(Debug, Clone)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub zone_id: String,
    /// The first three octets of its /24.
    pub prefix: [u8; 3],
    pub vlan: u32,
}

impl Network {
    pub fn cidr(&self) -> String {
        let [a, b, c] = self.prefix;
        format!("{a}.{b}.{c}.0/24")
    }

    pub fn gateway(&self) -> String {
        let [a, b, c] = self.prefix;
        format!("{a}.{b}.{c}.1")
    }
}

#[derive(Debug, Clone)]
pub struct Nic {
    pub id: String,
    pub network_id: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub is_default: bool,
}

#[derive(Debug, Clone)]
pub struct Vm {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub state: VmState,
    pub zone_id: String,
    pub offering_id: String,
    pub template_id: Option<String>,
    pub nics: Vec<Nic>,
    pub details: BTreeMap<String, String>,
    pub instance_name: String,
    pub created: String,
}

#[derive(Debug, Clone)]
pub struct Volume {
    pub id: String,
    pub name: String,
    pub volume_type: VolumeType,
    pub zone_id: String,
    pub size: u64,
    pub vm_id: Option<String>,
    pub device_id: Option<u32>,
    /// `Allocated` (not yet on storage), `Ready`, `Destroy`.
    pub state: String,
    pub created: String,
    pub attached: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    pub volume_id: String,
    pub volume_name: String,
    pub volume_type: VolumeType,
    pub zone_id: String,
    /// `Allocated` while the job runs, then `BackedUp`.
    pub state: String,
    pub size: u64,
    pub created: String,
}

#[derive(Debug, Clone)]
pub struct VmSnapshot {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub vm_id: String,
    pub zone_id: String,
    /// `Disk` or `DiskAndMemory`.
    pub kind: &'static str,
    /// `Allocated` while the job runs, then `Ready`.
    pub state: String,
    pub current: bool,
    pub parent: Option<String>,
    pub created: String,
}

/// Everything that exists, plus the ids of what was removed: the real
/// server resolves removed UUIDs too (a list by such an id is empty, a
/// custom id once used is never free again).
#[derive(Debug, Clone, Default)]
pub struct World {
    pub zones: Vec<Zone>,
    pub offerings: Vec<Offering>,
    pub templates: Vec<Template>,
    pub networks: Vec<Network>,
    pub vms: Vec<Vm>,
    pub volumes: Vec<Volume>,
    pub snapshots: Vec<Snapshot>,
    pub vm_snapshots: Vec<VmSnapshot>,
    pub jobs: Vec<Job>,
    pub removed: BTreeSet<String>,
    pub next_seq: u64,
}

impl World {
    /// A growing number for instance names, volume names, MACs.
    pub fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Whether `id` is or was used by any entity.
    pub fn id_taken(&self, id: &str) -> bool {
        self.removed.contains(id)
            || self.zones.iter().any(|x| x.id == id)
            || self.offerings.iter().any(|x| x.id == id)
            || self.templates.iter().any(|x| x.id == id)
            || self.networks.iter().any(|x| x.id == id)
            || self.vms.iter().any(|x| x.id == id)
            || self.volumes.iter().any(|x| x.id == id)
            || self.snapshots.iter().any(|x| x.id == id)
            || self.vm_snapshots.iter().any(|x| x.id == id)
            || self.jobs.iter().any(|x| x.id == id)
    }

    pub fn vm(&self, id: &str) -> Option<&Vm> {
        self.vms.iter().find(|v| v.id == id)
    }

    pub fn vm_mut(&mut self, id: &str) -> Option<&mut Vm> {
        self.vms.iter_mut().find(|v| v.id == id)
    }

    pub fn volume(&self, id: &str) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.id == id)
    }

    pub fn volume_mut(&mut self, id: &str) -> Option<&mut Volume> {
        self.volumes.iter_mut().find(|v| v.id == id)
    }

    pub fn network(&self, id: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.id == id)
    }

    pub fn zone_name(&self, id: &str) -> String {
        self.zones
            .iter()
            .find(|z| z.id == id)
            .map(|z| z.name.clone())
            .unwrap_or_default()
    }

    /// The volumes attached to `vm_id`, by device id.
    pub fn attached_to(&self, vm_id: &str) -> Vec<&Volume> {
        let mut v: Vec<&Volume> = self
            .volumes
            .iter()
            .filter(|v| v.vm_id.as_deref() == Some(vm_id))
            .collect();
        v.sort_by_key(|v| v.device_id);
        v
    }

    pub fn root_volume_of(&self, vm_id: &str) -> Option<&Volume> {
        self.attached_to(vm_id)
            .into_iter()
            .find(|v| v.device_id == Some(0))
    }

    /// Removes entities matching `pred` from `list`, remembering their ids.
    pub fn remove_where<T>(
        list: &mut Vec<T>,
        removed: &mut BTreeSet<String>,
        id_of: impl Fn(&T) -> &str,
        pred: impl Fn(&T) -> bool,
    ) {
        list.retain(|x| {
            if pred(x) {
                removed.insert(id_of(x).to_owned());
                false
            } else {
                true
            }
        });
    }

    /// A NIC on `network`: the next free address from `.2`, a fresh MAC.
    pub fn new_nic(&mut self, network_id: &str, is_default: bool) -> Option<Nic> {
        let network = self.network(network_id)?.clone();
        let used: BTreeSet<Ipv4Addr> = self
            .vms
            .iter()
            .flat_map(|vm| vm.nics.iter())
            .filter(|n| n.network_id == network_id)
            .map(|n| n.ip)
            .collect();
        let [a, b, c] = network.prefix;
        let ip = (2..=254u8)
            .map(|d| Ipv4Addr::new(a, b, c, d))
            .find(|ip| !used.contains(ip))?;
        let seq = self.seq();
        Some(Nic {
            id: new_id(),
            network_id: network_id.to_owned(),
            ip,
            mac: format!(
                "02:00:{:02x}:{:02x}:{:02x}:{:02x}",
                (seq >> 24) & 0xff,
                (seq >> 16) & 0xff,
                (seq >> 8) & 0xff,
                seq & 0xff
            ),
            is_default,
        })
    }

    /// Whether a VM named `name` (case-insensitively, as MySQL compares)
    /// exists on `network_id` (destroyed but not expunged ones count).
    pub fn hostname_taken(&self, network_id: &str, name: &str) -> bool {
        self.vms.iter().any(|vm| {
            vm.name.eq_ignore_ascii_case(name) && vm.nics.iter().any(|n| n.network_id == network_id)
        })
    }
}

/// CloudStack's host-name rule (`NetUtils.verifyDomainNameLabel`).
pub fn valid_hostname(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes[0].is_ascii_alphabetic()
        && bytes[bytes.len() - 1] != b'-'
}

pub const HOSTNAME_RULE: &str = "Invalid name. Vm name can contain ASCII letters 'a' through 'z', the digits '0' through '9', and the hyphen ('-'), must be between 1 and 63 characters long, and can't start or end with \"-\" and can't start with digit";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_rule() {
        assert!(valid_hostname("win2019-app"));
        assert!(valid_hostname("a"));
        assert!(!valid_hostname("9lives"));
        assert!(!valid_hostname("-x"));
        assert!(!valid_hostname("x-"));
        assert!(!valid_hostname("under_score"));
        assert!(!valid_hostname(&"x".repeat(64)));
        assert!(!valid_hostname(""));
    }

    #[test]
    fn nics_get_free_addresses_and_distinct_macs() {
        let mut w = World::default();
        w.networks.push(Network {
            id: "n".into(),
            name: "n".into(),
            zone_id: "z".into(),
            prefix: [10, 0, 7],
            vlan: 7,
        });
        let a = w.new_nic("n", true).expect("nic");
        assert_eq!(a.ip, Ipv4Addr::new(10, 0, 7, 2));
        w.vms.push(Vm {
            id: "vm".into(),
            name: "vm".into(),
            display_name: "vm".into(),
            state: VmState::Stopped,
            zone_id: "z".into(),
            offering_id: "o".into(),
            template_id: None,
            nics: vec![a.clone()],
            details: BTreeMap::new(),
            instance_name: "i-2-1-VM".into(),
            created: now_stamp(),
        });
        let b = w.new_nic("n", true).expect("nic");
        assert_eq!(b.ip, Ipv4Addr::new(10, 0, 7, 3));
        assert_ne!(a.mac, b.mac);
        assert!(w.hostname_taken("n", "VM"));
        assert!(w.new_nic("missing", true).is_none());
    }
}
