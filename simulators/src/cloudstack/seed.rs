//! Seeding the world through the admin API (`POST /sim/seed`) and for the
//! demo. A seed is applied whole or not at all.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::model::{
    GIB, Network, Offering, Template, Vm, VmState, Volume, VolumeType, World, Zone, is_uuid,
    new_id, now_stamp, valid_hostname,
};

fn yes() -> bool {
    true
}

/// What to create. Ids are optional (generated when absent) and must be
/// UUIDs not used before; `zoneid` may be left out while exactly one zone
/// exists. Sizes are in GiB.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeedRequest {
    pub zones: Vec<SeedZone>,
    pub service_offerings: Vec<SeedOffering>,
    pub templates: Vec<SeedTemplate>,
    pub networks: Vec<SeedNetwork>,
    pub vms: Vec<SeedVm>,
    pub volumes: Vec<SeedVolume>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedZone {
    pub id: Option<String>,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedOffering {
    pub id: Option<String>,
    pub name: String,
    pub cpunumber: u32,
    /// MiB.
    pub memory: u64,
    pub cpuspeed: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedTemplate {
    pub id: Option<String>,
    pub name: String,
    pub zoneid: Option<String>,
    #[serde(default = "yes")]
    pub featured: bool,
    pub ostypename: Option<String>,
    pub size_gib: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedNetwork {
    pub id: Option<String>,
    pub name: String,
    pub zoneid: Option<String>,
    /// A /24 such as `10.1.1.0/24` (default: the next free `10.1.N.0/24`).
    pub cidr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedVm {
    pub id: Option<String>,
    pub name: String,
    pub displayname: Option<String>,
    pub zoneid: Option<String>,
    pub serviceofferingid: String,
    pub templateid: Option<String>,
    #[serde(default)]
    pub networkids: Vec<String>,
    /// `Running` (default) or `Stopped`.
    pub state: Option<String>,
    /// Give the VM a ROOT volume at device 0 (default true).
    #[serde(default = "yes")]
    pub root_volume: bool,
    pub root_volume_id: Option<String>,
    pub root_size_gib: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedVolume {
    pub id: Option<String>,
    pub name: String,
    pub size_gib: u64,
    pub zoneid: Option<String>,
    /// Attach it to this VM (as a data disk unless `deviceid` is 0).
    pub virtualmachineid: Option<String>,
    pub deviceid: Option<u32>,
}

/// The ids of what a seed created, in request order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeedReport {
    pub zones: Vec<String>,
    pub service_offerings: Vec<String>,
    pub templates: Vec<String>,
    pub networks: Vec<String>,
    pub vms: Vec<String>,
    pub root_volumes: Vec<String>,
    pub volumes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SeedError(pub String);

fn fail<T>(msg: impl Into<String>) -> Result<T, SeedError> {
    Err(SeedError(msg.into()))
}

fn fresh_id(w: &World, wanted: Option<&String>, what: &str) -> Result<String, SeedError> {
    match wanted {
        None => Ok(new_id()),
        Some(id) if !is_uuid(id) => fail(format!("{what} id {id:?} is not a UUID")),
        Some(id) if w.id_taken(id) => fail(format!("{what} id {id} is already in use")),
        Some(id) => Ok(id.clone()),
    }
}

fn zone_of(w: &World, wanted: Option<&String>, what: &str) -> Result<String, SeedError> {
    match wanted {
        Some(id) if w.zones.iter().any(|z| &z.id == id) => Ok(id.clone()),
        Some(id) => fail(format!("{what}: unknown zoneid {id}")),
        None => match w.zones.as_slice() {
            [only] => Ok(only.id.clone()),
            _ => fail(format!(
                "{what}: zoneid is required unless exactly one zone exists"
            )),
        },
    }
}

fn parse_cidr(cidr: &str) -> Result<[u8; 3], SeedError> {
    let Some((addr, "24")) = cidr.split_once('/') else {
        return fail(format!("cidr {cidr:?} must be a /24"));
    };
    let ip: Ipv4Addr = addr
        .parse()
        .map_err(|_| SeedError(format!("cidr {cidr:?} is not an IPv4 network")))?;
    let [a, b, c, _] = ip.octets();
    Ok([a, b, c])
}

/// Applies `req` to a copy of `world`; the copy replaces it only when
/// everything in the request is valid.
pub fn apply(world: &mut World, req: &SeedRequest) -> Result<SeedReport, SeedError> {
    let mut w = world.clone();
    let mut report = SeedReport::default();
    for z in &req.zones {
        let id = fresh_id(&w, z.id.as_ref(), "zone")?;
        w.zones.push(Zone {
            id: id.clone(),
            name: z.name.clone(),
        });
        report.zones.push(id);
    }
    for o in &req.service_offerings {
        let id = fresh_id(&w, o.id.as_ref(), "service offering")?;
        if o.cpunumber == 0 || o.memory == 0 {
            return fail(format!(
                "service offering {}: cpunumber and memory must be positive",
                o.name
            ));
        }
        w.offerings.push(Offering {
            id: id.clone(),
            name: o.name.clone(),
            cpunumber: o.cpunumber,
            cpuspeed: o.cpuspeed.unwrap_or(2000),
            memory: o.memory,
            created: now_stamp(),
        });
        report.service_offerings.push(id);
    }
    for t in &req.templates {
        let id = fresh_id(&w, t.id.as_ref(), "template")?;
        let zone_id = zone_of(&w, t.zoneid.as_ref(), &format!("template {}", t.name))?;
        w.templates.push(Template {
            id: id.clone(),
            name: t.name.clone(),
            zone_id,
            featured: t.featured,
            os_type_name: t
                .ostypename
                .clone()
                .unwrap_or_else(|| "Other Linux (64-bit)".to_owned()),
            size: t.size_gib.unwrap_or(10) * GIB,
            created: now_stamp(),
        });
        report.templates.push(id);
    }
    for n in &req.networks {
        let id = fresh_id(&w, n.id.as_ref(), "network")?;
        let zone_id = zone_of(&w, n.zoneid.as_ref(), &format!("network {}", n.name))?;
        let prefix = match &n.cidr {
            Some(cidr) => parse_cidr(cidr)?,
            None => [10, 1, (w.networks.len() + 1).min(254) as u8],
        };
        if w.networks
            .iter()
            .any(|x| x.prefix == prefix && x.zone_id == zone_id)
        {
            return fail(format!(
                "network {}: its cidr is used by another network of the zone",
                n.name
            ));
        }
        let vlan = 1000 + w.networks.len() as u32;
        w.networks.push(Network {
            id: id.clone(),
            name: n.name.clone(),
            zone_id,
            prefix,
            vlan,
        });
        report.networks.push(id);
    }
    for vm in &req.vms {
        let (id, root) = seed_vm(&mut w, vm)?;
        report.vms.push(id);
        report.root_volumes.extend(root);
    }
    for v in &req.volumes {
        report.volumes.push(seed_volume(&mut w, v)?);
    }
    *world = w;
    Ok(report)
}

fn seed_vm(w: &mut World, vm: &SeedVm) -> Result<(String, Option<String>), SeedError> {
    let what = format!("vm {}", vm.name);
    let id = fresh_id(w, vm.id.as_ref(), "vm")?;
    let zone_id = zone_of(w, vm.zoneid.as_ref(), &what)?;
    if !valid_hostname(&vm.name) {
        return fail(format!("{what}: not a valid host name"));
    }
    if !w.offerings.iter().any(|o| o.id == vm.serviceofferingid) {
        return fail(format!(
            "{what}: unknown serviceofferingid {}",
            vm.serviceofferingid
        ));
    }
    let template = match &vm.templateid {
        Some(tid) => Some(
            w.templates
                .iter()
                .find(|t| &t.id == tid)
                .cloned()
                .ok_or_else(|| SeedError(format!("{what}: unknown templateid {tid}")))?,
        ),
        None => None,
    };
    let state = match vm.state.as_deref() {
        None | Some("Running") => VmState::Running,
        Some("Stopped") => VmState::Stopped,
        Some(other) => {
            return fail(format!(
                "{what}: state must be Running or Stopped, not {other}"
            ));
        }
    };
    let mut nics = Vec::new();
    for (i, net) in vm.networkids.iter().enumerate() {
        if w.network(net).is_none_or(|n| n.zone_id != zone_id) {
            return fail(format!("{what}: unknown networkid {net} in its zone"));
        }
        if w.hostname_taken(net, &vm.name) {
            return fail(format!("{what}: the host name is taken in network {net}"));
        }
        nics.push(
            w.new_nic(net, i == 0)
                .ok_or_else(|| SeedError(format!("{what}: network {net} is full")))?,
        );
    }
    let seq = w.seq();
    w.vms.push(Vm {
        id: id.clone(),
        name: vm.name.clone(),
        display_name: vm.displayname.clone().unwrap_or_else(|| vm.name.clone()),
        state,
        zone_id: zone_id.clone(),
        offering_id: vm.serviceofferingid.clone(),
        template_id: template.as_ref().map(|t| t.id.clone()),
        nics,
        details: Default::default(),
        instance_name: format!("i-2-{seq}-VM"),
        created: now_stamp(),
    });
    if !vm.root_volume {
        return Ok((id, None));
    }
    let root_id = fresh_id(w, vm.root_volume_id.as_ref(), "root volume")?;
    let size = vm
        .root_size_gib
        .map(|g| g * GIB)
        .or(template.map(|t| t.size))
        .unwrap_or(20 * GIB);
    w.volumes.push(Volume {
        id: root_id.clone(),
        name: format!("ROOT-{seq}"),
        volume_type: VolumeType::Root,
        zone_id,
        size,
        vm_id: Some(id.clone()),
        device_id: Some(0),
        state: "Ready".to_owned(),
        created: now_stamp(),
        attached: Some(now_stamp()),
    });
    Ok((id, Some(root_id)))
}

fn seed_volume(w: &mut World, v: &SeedVolume) -> Result<String, SeedError> {
    let what = format!("volume {}", v.name);
    let id = fresh_id(w, v.id.as_ref(), "volume")?;
    let mut zone_id = zone_of(w, v.zoneid.as_ref(), &what);
    let mut device_id = None;
    if let Some(vm_id) = &v.virtualmachineid {
        let Some(vm) = w.vm(vm_id) else {
            return fail(format!("{what}: unknown virtualmachineid {vm_id}"));
        };
        zone_id = Ok(vm.zone_id.clone());
        let used: Vec<u32> = w
            .attached_to(vm_id)
            .iter()
            .filter_map(|x| x.device_id)
            .collect();
        let device = v
            .deviceid
            .unwrap_or_else(|| (1..).find(|d| !used.contains(d)).unwrap_or(1));
        if used.contains(&device) {
            return fail(format!("{what}: device id {device} of vm {vm_id} is taken"));
        }
        device_id = Some(device);
    } else if v.deviceid.is_some() {
        return fail(format!("{what}: deviceid needs virtualmachineid"));
    }
    if v.size_gib == 0 {
        return fail(format!("{what}: size_gib must be positive"));
    }
    w.volumes.push(Volume {
        id: id.clone(),
        name: v.name.clone(),
        volume_type: if device_id == Some(0) {
            VolumeType::Root
        } else {
            VolumeType::DataDisk
        },
        zone_id: zone_id?,
        size: v.size_gib * GIB,
        vm_id: v.virtualmachineid.clone(),
        device_id,
        state: "Ready".to_owned(),
        created: now_stamp(),
        attached: device_id.map(|_| now_stamp()),
    });
    Ok(id)
}
