//! The replicated-VM inventory: what replication has prepared, and so what
//! can be failed over. A registration is checked here, every problem listed.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// Where a VM stands in replication. Only a replicated VM fails over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicationState {
    Replicated,
    Syncing,
    Paused,
    Error,
    /// Failed over live; registering it again makes it replicated.
    FailedOver,
}

impl ReplicationState {
    pub const ALL: [ReplicationState; 5] = [
        ReplicationState::Replicated,
        ReplicationState::Syncing,
        ReplicationState::Paused,
        ReplicationState::Error,
        ReplicationState::FailedOver,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationState::Replicated => "replicated",
            ReplicationState::Syncing => "syncing",
            ReplicationState::Paused => "paused",
            ReplicationState::Error => "error",
            ReplicationState::FailedOver => "failed-over",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OsFamily {
    Windows,
    Linux,
}

impl OsFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            OsFamily::Windows => "windows",
            OsFamily::Linux => "linux",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "windows" => Some(OsFamily::Windows),
            "linux" => Some(OsFamily::Linux),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub disk_id: String,
    pub cloudstack_volume_id: String,
    pub linstor_resource: String,
    /// Block device of the volume on the host that runs virt-customize.
    pub device_path: String,
    #[serde(default)]
    pub boot: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    pub source_network: String,
    #[serde(default)]
    pub test_network_id: Option<String>,
    #[serde(default)]
    pub live_network_id: Option<String>,
}

/// A VM as registered (`PUT /api/v1/vms/{vm_id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRegistration {
    pub vm_name: String,
    pub os_family: OsFamily,
    pub cpu_count: u32,
    pub memory_mb: u64,
    /// One of [`ReplicationState`]; kept as text so that a bad value is
    /// listed with every other problem of the registration.
    pub replication_state: String,
    pub disks: Vec<Disk>,
    #[serde(default)]
    pub nics: Vec<Nic>,
}

impl VmRegistration {
    /// Every rule a registration breaks, so the caller fixes them at once.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.vm_name.trim().is_empty() || self.vm_name.len() > 255 {
            problems.push("vm_name must be 1 to 255 characters".to_owned());
        }
        if self.cpu_count == 0 || self.cpu_count > 512 {
            problems.push("cpu_count must be between 1 and 512".to_owned());
        }
        if self.memory_mb < 64 || self.memory_mb > 64 * 1024 * 1024 {
            problems.push("memory_mb must be between 64 and 67108864".to_owned());
        }
        if ReplicationState::parse(&self.replication_state).is_none() {
            let known: Vec<_> = ReplicationState::ALL.iter().map(|s| s.as_str()).collect();
            problems.push(format!(
                "replication_state must be one of {}",
                known.join(", ")
            ));
        }
        if self.disks.is_empty() || self.disks.len() > 64 {
            problems.push("disks must list 1 to 64 disks".to_owned());
        }
        let boots = self.disks.iter().filter(|d| d.boot).count();
        if !self.disks.is_empty() && boots != 1 {
            problems.push(format!(
                "exactly one disk must be the boot disk, found {boots}"
            ));
        }
        let mut seen = HashSet::new();
        for disk in &self.disks {
            for (field, value) in [
                ("disk_id", &disk.disk_id),
                ("cloudstack_volume_id", &disk.cloudstack_volume_id),
                ("linstor_resource", &disk.linstor_resource),
                ("device_path", &disk.device_path),
            ] {
                if value.trim().is_empty() {
                    problems.push(format!(
                        "disk {:?}: {field} must not be empty",
                        disk.disk_id
                    ));
                }
            }
            if !seen.insert(disk.disk_id.as_str()) {
                problems.push(format!("disk_id {:?} appears twice", disk.disk_id));
            }
        }
        if self.nics.len() > 16 {
            problems.push("at most 16 nics".to_owned());
        }
        let mut sources = HashSet::new();
        for nic in &self.nics {
            if nic.source_network.trim().is_empty() {
                problems.push("nic source_network must not be empty".to_owned());
            }
            if !sources.insert(nic.source_network.as_str()) {
                problems.push(format!(
                    "source_network {:?} appears twice",
                    nic.source_network
                ));
            }
        }
        problems
    }

    pub fn replication(&self) -> Option<ReplicationState> {
        ReplicationState::parse(&self.replication_state)
    }

    pub fn boot_disk(&self) -> Option<&Disk> {
        self.disks.iter().find(|d| d.boot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration() -> VmRegistration {
        VmRegistration {
            vm_name: "pgtest1".into(),
            os_family: OsFamily::Linux,
            cpu_count: 2,
            memory_mb: 4096,
            replication_state: "replicated".into(),
            disks: vec![Disk {
                disk_id: "disk-0".into(),
                cloudstack_volume_id: "vol-1".into(),
                linstor_resource: "pvc-1".into(),
                device_path: "/dev/drbd1000".into(),
                boot: true,
            }],
            nics: vec![Nic {
                source_network: "VM Network".into(),
                test_network_id: None,
                live_network_id: None,
            }],
        }
    }

    #[test]
    fn a_sound_registration_has_no_problems() {
        assert!(registration().problems().is_empty());
        assert_eq!(
            registration().replication(),
            Some(ReplicationState::Replicated)
        );
    }

    #[test]
    fn every_problem_is_listed() {
        let mut r = registration();
        r.cpu_count = 0;
        r.replication_state = "done".into();
        r.disks[0].boot = false;
        r.disks.push(r.disks[0].clone());
        let problems = r.problems();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("boot disk")));
        assert!(problems.iter().any(|p| p.contains("appears twice")));
    }

    #[test]
    fn replication_states_have_their_public_names() {
        for state in ReplicationState::ALL {
            assert_eq!(ReplicationState::parse(state.as_str()), Some(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::Value::String(state.as_str().into())
            );
        }
    }
}
