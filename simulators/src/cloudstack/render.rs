//! Entities as the real server renders them (field names and shapes of the
//! recorded responses in `shared/reference/cloudstack`).

use serde_json::{Map, Value, json};

use super::model::{
    ACCOUNT_NAME, DOMAIN_ID, NETWORK_DOMAIN, Network, Offering, Snapshot, Template, Vm, VmSnapshot,
    VmState, Volume, World, Zone,
};

const HOST_ID: &str = "b0570000-0000-4000-8000-000000000001";
const HOST_NAME: &str = "sim-kvm-host-1";
const GUEST_OS_ID: &str = "0e000000-0000-4000-8000-000000000001";
const PHYSICAL_NETWORK_ID: &str = "9e000000-0000-4000-8000-000000000001";
const NETWORK_OFFERING_ID: &str = "0f000000-0000-4000-8000-000000000001";

fn owner(map: &mut Map<String, Value>) {
    map.insert("account".into(), json!(ACCOUNT_NAME));
    map.insert("domainid".into(), json!(DOMAIN_ID));
    map.insert("domain".into(), json!("ROOT"));
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

pub fn zone(z: &Zone) -> Value {
    json!({
        "id": z.id, "name": z.name, "networktype": "Advanced",
        "securitygroupsenabled": false, "allocationstate": "Enabled",
        "dhcpprovider": "VirtualRouter", "localstorageenabled": false, "tags": [],
    })
}

pub fn offering(o: &Offering) -> Value {
    json!({
        "id": o.id, "name": o.name, "displaytext": o.name,
        "cpunumber": o.cpunumber, "cpuspeed": o.cpuspeed, "memory": o.memory,
        "created": o.created, "storagetype": "shared", "provisioningtype": "thin",
        "offerha": false, "limitcpuuse": false, "isvolatile": false, "issystem": false,
        "defaultuse": false, "iscustomized": false, "cacheMode": "none", "rootdisksize": 0,
    })
}

pub fn template(w: &World, t: &Template) -> Value {
    let mut map = object(json!({
        "id": t.id, "name": t.name, "displaytext": t.name, "ispublic": true,
        "created": t.created, "isready": true, "passwordenabled": false,
        "format": "QCOW2", "isfeatured": t.featured, "crossZones": false,
        "ostypeid": GUEST_OS_ID, "ostypename": t.os_type_name,
        "zoneid": t.zone_id, "zonename": w.zone_name(&t.zone_id),
        "status": "Download Complete", "size": t.size, "templatetype": "USER",
        "hypervisor": "KVM", "isextractable": false, "bootable": true,
        "requireshvm": true, "details": {}, "tags": [],
    }));
    owner(&mut map);
    Value::Object(map)
}

pub fn network(w: &World, n: &Network) -> Value {
    let mut map = object(json!({
        "id": n.id, "name": n.name, "displaytext": n.name,
        "broadcastdomaintype": "Vlan", "traffictype": "Guest",
        "gateway": n.gateway(), "netmask": "255.255.255.0", "cidr": n.cidr(),
        "zoneid": n.zone_id, "zonename": w.zone_name(&n.zone_id),
        "networkofferingid": NETWORK_OFFERING_ID,
        "networkofferingname": "DefaultIsolatedNetworkOfferingWithSourceNatService",
        "networkofferingdisplaytext": "Offering for Isolated networks with Source Nat service enabled",
        "networkofferingconservemode": true, "networkofferingavailability": "Required",
        "issystem": false, "state": "Implemented", "related": n.id,
        "broadcasturi": format!("vlan://{}", n.vlan), "vlan": n.vlan.to_string(),
        "dns1": "8.8.8.8", "type": "Isolated", "acltype": "Account",
        "networkdomain": NETWORK_DOMAIN, "physicalnetworkid": PHYSICAL_NETWORK_ID,
        "restartrequired": false, "specifyipranges": false, "canusefordeploy": true,
        "ispersistent": false, "tags": [], "details": {}, "displaynetwork": true,
        "strechedl2subnet": false, "redundantrouter": false,
    }));
    owner(&mut map);
    Value::Object(map)
}

pub fn vm(w: &World, vm: &Vm) -> Value {
    let offering = w.offerings.iter().find(|o| o.id == vm.offering_id);
    let template = vm
        .template_id
        .as_ref()
        .and_then(|id| w.templates.iter().find(|t| &t.id == id));
    let nics: Vec<Value> = vm
        .nics
        .iter()
        .map(|nic| {
            let net = w.network(&nic.network_id);
            let vlan = net.map_or(0, |n| n.vlan);
            json!({
                "id": nic.id, "networkid": nic.network_id,
                "networkname": net.map(|n| n.name.clone()).unwrap_or_default(),
                "netmask": "255.255.255.0",
                "gateway": net.map(Network::gateway).unwrap_or_default(),
                "ipaddress": nic.ip.to_string(),
                "isolationuri": format!("vlan://{vlan}"), "broadcasturi": format!("vlan://{vlan}"),
                "traffictype": "Guest", "type": "Isolated", "isdefault": nic.is_default,
                "macaddress": nic.mac, "secondaryip": [], "extradhcpoption": [],
            })
        })
        .collect();
    let mut map = object(json!({
        "id": vm.id, "name": vm.name, "displayname": vm.display_name,
        "userid": super::model::USER_ID, "username": ACCOUNT_NAME,
        "created": vm.created, "state": vm.state, "haenable": false,
        "zoneid": vm.zone_id, "zonename": w.zone_name(&vm.zone_id),
        "passwordenabled": false,
        "serviceofferingid": vm.offering_id,
        "serviceofferingname": offering.map(|o| o.name.clone()).unwrap_or_default(),
        "cpunumber": offering.map_or(0, |o| o.cpunumber),
        "cpuspeed": offering.map_or(0, |o| o.cpuspeed),
        "memory": offering.map_or(0, |o| o.memory),
        "guestosid": GUEST_OS_ID, "rootdeviceid": 0, "rootdevicetype": "ROOT",
        "securitygroup": [], "nic": nics, "hypervisor": "KVM",
        "instancename": vm.instance_name, "details": vm.details, "affinitygroup": [],
        "displayvm": true, "isdynamicallyscalable": false, "ostypeid": GUEST_OS_ID,
        "tags": [],
    }));
    owner(&mut map);
    if let Some(t) = template {
        map.insert("templateid".into(), json!(t.id));
        map.insert("templatename".into(), json!(t.name));
        map.insert("templatedisplaytext".into(), json!(t.name));
        map.insert("osdisplayname".into(), json!(t.os_type_name));
    }
    if matches!(vm.state, VmState::Running | VmState::Stopping) {
        map.insert("hostid".into(), json!(HOST_ID));
        map.insert("hostname".into(), json!(HOST_NAME));
    }
    Value::Object(map)
}

pub fn volume(w: &World, v: &Volume) -> Value {
    let mut map = object(json!({
        "id": v.id, "name": v.name, "zoneid": v.zone_id, "zonename": w.zone_name(&v.zone_id),
        "type": v.volume_type.as_str(), "provisioningtype": "thin", "size": v.size,
        "created": v.created, "state": v.state, "storagetype": "shared",
        "hypervisor": "KVM", "destroyed": v.state == "Destroy", "isextractable": false,
        "displayvolume": true, "quiescevm": false, "path": v.id,
    }));
    owner(&mut map);
    if v.state != "Allocated" {
        map.insert("storage".into(), json!("sim-primary-1"));
    }
    if let Some(vm) = v.vm_id.as_deref().and_then(|id| w.vm(id)) {
        map.insert("virtualmachineid".into(), json!(vm.id));
        map.insert("vmname".into(), json!(vm.name));
        map.insert("vmdisplayname".into(), json!(vm.display_name));
        map.insert("vmstate".into(), json!(vm.state));
        if let Some(dev) = v.device_id {
            map.insert("deviceid".into(), json!(dev));
        }
        if let Some(at) = &v.attached {
            map.insert("attached".into(), json!(at));
        }
    }
    Value::Object(map)
}

pub fn snapshot(s: &Snapshot) -> Value {
    let mut map = object(json!({
        "id": s.id, "name": s.name, "snapshottype": "MANUAL", "intervaltype": "MANUAL",
        "volumeid": s.volume_id, "volumename": s.volume_name,
        "volumetype": s.volume_type.as_str(), "created": s.created, "state": s.state,
        "physicalsize": s.size, "virtualsize": s.size, "zoneid": s.zone_id,
        "revertable": true, "locationtype": "PRIMARY", "tags": [],
    }));
    owner(&mut map);
    Value::Object(map)
}

pub fn vm_snapshot(s: &VmSnapshot) -> Value {
    let mut map = object(json!({
        "id": s.id, "name": s.name, "displayname": s.display_name, "state": s.state,
        "created": s.created, "current": s.current, "type": s.kind,
        "virtualmachineid": s.vm_id, "zoneid": s.zone_id, "tags": [],
    }));
    owner(&mut map);
    if let Some(parent) = &s.parent {
        map.insert("parent".into(), json!(parent));
    }
    Value::Object(map)
}

/// A list answer: `{"count":N,"<key>":[...]}`, or `{}` when empty.
pub fn list(key: &str, items: Vec<Value>) -> Value {
    if items.is_empty() {
        return json!({});
    }
    json!({ "count": items.len(), key: items })
}
