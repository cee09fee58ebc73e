//! The demo scenario, with fixed ids that scripts and tests refer to.
//!
//! One zone; three compute offerings; a featured template; networks to map
//! VMware port groups onto (an isolated test network, a live network and
//! one named like the VMware default "VM Network"); and the failover
//! appliance, a running VM on its own management network whose data disks
//! are the replicated disks of two protected VMware VMs:
//!
//! | disk | stands for | size | device on the appliance |
//! | --- | --- | --- | --- |
//! | [`DEMO_WIN_BOOT_VOLUME_ID`] | `win2019-app` disk 0 (boot) | 60 GiB | 1 |
//! | [`DEMO_WIN_DATA_VOLUME_ID`] | `win2019-app` disk 1 (data) | 100 GiB | 2 |
//! | [`DEMO_PG_BOOT_VOLUME_ID`] | `pgtest1` disk 0 (boot) | 20 GiB | 3 |

use super::seed::{
    SeedNetwork, SeedOffering, SeedRequest, SeedTemplate, SeedVm, SeedVolume, SeedZone,
};

pub const DEMO_ZONE_ID: &str = "11111111-0000-4000-8000-000000000001";
/// 1 vCPU, 1024 MiB.
pub const DEMO_OFFERING_SMALL_ID: &str = "22222222-0000-4000-8000-000000000001";
/// 2 vCPU, 4096 MiB.
pub const DEMO_OFFERING_MEDIUM_ID: &str = "22222222-0000-4000-8000-000000000002";
/// 4 vCPU, 8192 MiB.
pub const DEMO_OFFERING_LARGE_ID: &str = "22222222-0000-4000-8000-000000000004";
/// A featured template that failed-over VMs are deployed from (its root
/// disk is then swapped for the replicated boot disk).
pub const DEMO_TEMPLATE_ID: &str = "33333333-0000-4000-8000-000000000001";
/// Isolated network for test failovers (`failover-test`, 10.10.1.0/24).
pub const DEMO_TEST_NETWORK_ID: &str = "44444444-0000-4000-8000-000000000001";
/// Network for live failovers (`failover-live`, 10.20.1.0/24).
pub const DEMO_LIVE_NETWORK_ID: &str = "44444444-0000-4000-8000-000000000002";
/// Live counterpart of the VMware port group `VM Network` (10.30.1.0/24).
pub const DEMO_VM_NETWORK_ID: &str = "44444444-0000-4000-8000-000000000003";
/// The appliance's management network (`failover-mgmt`, 10.99.1.0/24).
pub const DEMO_MGMT_NETWORK_ID: &str = "44444444-0000-4000-8000-000000000004";
/// The failover appliance VM (`failover-appliance`, Running).
pub const DEMO_APPLIANCE_VM_ID: &str = "55555555-0000-4000-8000-000000000001";
pub const DEMO_APPLIANCE_VM_NAME: &str = "failover-appliance";
/// The appliance's own ROOT volume.
pub const DEMO_APPLIANCE_ROOT_VOLUME_ID: &str = "66666666-0000-4000-8000-000000000001";
/// Replica of `win2019-app` disk 0 (boot), a data disk of the appliance.
pub const DEMO_WIN_BOOT_VOLUME_ID: &str = "66666666-0000-4000-8000-000000000002";
/// Replica of `win2019-app` disk 1 (data), a data disk of the appliance.
pub const DEMO_WIN_DATA_VOLUME_ID: &str = "66666666-0000-4000-8000-000000000003";
/// Replica of `pgtest1` disk 0 (boot), a data disk of the appliance.
pub const DEMO_PG_BOOT_VOLUME_ID: &str = "66666666-0000-4000-8000-000000000004";

fn id(s: &str) -> Option<String> {
    Some(s.to_owned())
}

fn network(uuid: &str, name: &str, cidr: &str) -> SeedNetwork {
    SeedNetwork {
        id: id(uuid),
        name: name.to_owned(),
        zoneid: id(DEMO_ZONE_ID),
        cidr: Some(cidr.to_owned()),
    }
}

fn offering(uuid: &str, name: &str, cpus: u32, memory: u64) -> SeedOffering {
    SeedOffering {
        id: id(uuid),
        name: name.to_owned(),
        cpunumber: cpus,
        memory,
        cpuspeed: Some(2000),
    }
}

fn replica(uuid: &str, name: &str, size_gib: u64, device: u32) -> SeedVolume {
    SeedVolume {
        id: id(uuid),
        name: name.to_owned(),
        size_gib,
        zoneid: id(DEMO_ZONE_ID),
        virtualmachineid: id(DEMO_APPLIANCE_VM_ID),
        deviceid: Some(device),
    }
}

/// The demo scenario as a seed.
pub fn demo_seed() -> SeedRequest {
    SeedRequest {
        zones: vec![SeedZone {
            id: id(DEMO_ZONE_ID),
            name: "sim-zone-1".to_owned(),
        }],
        service_offerings: vec![
            offering(DEMO_OFFERING_SMALL_ID, "Small Instance", 1, 1024),
            offering(DEMO_OFFERING_MEDIUM_ID, "Medium Instance", 2, 4096),
            offering(DEMO_OFFERING_LARGE_ID, "Large Instance", 4, 8192),
        ],
        templates: vec![SeedTemplate {
            id: id(DEMO_TEMPLATE_ID),
            name: "Failover Base (KVM)".to_owned(),
            zoneid: id(DEMO_ZONE_ID),
            featured: true,
            ostypename: Some("Other PV Virtio-SCSI (64-bit)".to_owned()),
            size_gib: Some(8),
        }],
        networks: vec![
            network(DEMO_TEST_NETWORK_ID, "failover-test", "10.10.1.0/24"),
            network(DEMO_LIVE_NETWORK_ID, "failover-live", "10.20.1.0/24"),
            network(DEMO_VM_NETWORK_ID, "VM Network", "10.30.1.0/24"),
            network(DEMO_MGMT_NETWORK_ID, "failover-mgmt", "10.99.1.0/24"),
        ],
        vms: vec![SeedVm {
            id: id(DEMO_APPLIANCE_VM_ID),
            name: DEMO_APPLIANCE_VM_NAME.to_owned(),
            displayname: Some("Failover appliance".to_owned()),
            zoneid: id(DEMO_ZONE_ID),
            serviceofferingid: DEMO_OFFERING_MEDIUM_ID.to_owned(),
            templateid: id(DEMO_TEMPLATE_ID),
            networkids: vec![DEMO_MGMT_NETWORK_ID.to_owned()],
            state: Some("Running".to_owned()),
            root_volume: true,
            root_volume_id: id(DEMO_APPLIANCE_ROOT_VOLUME_ID),
            root_size_gib: Some(20),
        }],
        volumes: vec![
            replica(DEMO_WIN_BOOT_VOLUME_ID, "win2019-app-disk0", 60, 1),
            replica(DEMO_WIN_DATA_VOLUME_ID, "win2019-app-disk1", 100, 2),
            replica(DEMO_PG_BOOT_VOLUME_ID, "pgtest1-disk0", 20, 3),
        ],
    }
}
