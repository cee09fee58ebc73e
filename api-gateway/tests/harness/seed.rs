//! More replicated VMs than the demo scenario has: their volumes on the
//! appliance VM (CloudStack admin API), their LINSTOR resource definitions
//! (LINSTOR admin API), disk files for the virt-customize stand-in, and
//! their inventory records (`PUT /api/v1/vms/{id}`).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use uuid::Uuid;

use simulators::cloudstack as cs_sim;

#[derive(Debug, Clone)]
pub struct SeededDisk {
    pub disk_id: String,
    pub volume_id: String,
    pub resource: String,
    pub device_path: PathBuf,
    /// Where the volume sits on the appliance between failovers.
    pub appliance_device: u32,
}

#[derive(Debug, Clone)]
pub struct SeededVm {
    pub vm_id: Uuid,
    pub name: String,
    pub windows: bool,
    pub disks: Vec<SeededDisk>,
}

impl SeededVm {
    pub fn inventory_record(&self) -> Value {
        json!({
            "vm_name": self.name,
            "os_family": if self.windows { "windows" } else { "linux" },
            "cpu_count": if self.windows { 2 } else { 1 },
            "memory_mb": if self.windows { 4096 } else { 1024 },
            "replication_state": "replicated",
            "disks": self.disks.iter().enumerate().map(|(i, d)| json!({
                "disk_id": d.disk_id,
                "cloudstack_volume_id": d.volume_id,
                "linstor_resource": d.resource,
                "device_path": d.device_path,
                "boot": i == 0,
            })).collect::<Vec<_>>(),
            "nics": [{"source_network": "VM Network"}],
        })
    }
}

/// The simulator's base URL (`http://host:port`) from a configured API URL.
pub fn base_of(endpoint: impl std::fmt::Display) -> String {
    let endpoint = endpoint.to_string();
    let authority = endpoint.find("://").map_or(0, |i| i + 3);
    match endpoint[authority..].find('/') {
        Some(path) => endpoint[..authority + path].to_owned(),
        None => endpoint,
    }
}

async fn post_json(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    let response = http.post(url).json(body).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Seeds `count` VMs named `<tag>-<n>` in both simulators; every third is a
/// Windows VM with two disks, the others Linux VMs with one. Their volumes
/// go on the appliance from device `first_device` on.
pub async fn seed_vms(
    http: &reqwest::Client,
    cloudstack: &str,
    linstor: &str,
    disks_dir: &Path,
    tag: &str,
    count: usize,
    first_device: u32,
) -> Vec<SeededVm> {
    let mut device = first_device;
    let mut vms = Vec::new();
    for n in 0..count {
        let windows = n % 3 == 0;
        let name = format!("{tag}-{n:03}");
        let disks = (0..if windows { 2 } else { 1 })
            .map(|i| {
                let path = disks_dir.join(format!("{name}-disk{i}.raw"));
                std::fs::write(&path, b"disk").unwrap();
                device += 1;
                SeededDisk {
                    disk_id: format!("disk-{i}"),
                    volume_id: Uuid::new_v4().to_string(),
                    resource: format!("pvc-{name}-disk{i}"),
                    device_path: path,
                    appliance_device: device - 1,
                }
            })
            .collect();
        vms.push(SeededVm {
            vm_id: Uuid::new_v4(),
            name,
            windows,
            disks,
        });
    }
    let volumes: Vec<Value> = vms
        .iter()
        .flat_map(|vm| {
            vm.disks.iter().map(|d| {
                json!({
                    "id": d.volume_id,
                    "name": d.resource.trim_start_matches("pvc-"),
                    "size_gib": 10,
                    "zoneid": cs_sim::DEMO_ZONE_ID,
                    "virtualmachineid": cs_sim::DEMO_APPLIANCE_VM_ID,
                    "deviceid": d.appliance_device,
                })
            })
        })
        .collect();
    post_json(
        http,
        &format!("{cloudstack}/sim/seed"),
        &json!({ "volumes": volumes }),
    )
    .await;
    let resources: Vec<Value> = vms
        .iter()
        .flat_map(|vm| {
            vm.disks.iter().map(
                |d| json!({"name": d.resource, "volume_definitions": [{"size_kib": 10_485_760}]}),
            )
        })
        .collect();
    post_json(
        http,
        &format!("{linstor}/sim/seed"),
        &json!({ "resource_definitions": resources }),
    )
    .await;
    vms
}

/// Registers `vm` in the inventory of the gateway at `base_url`.
pub async fn register(http: &reqwest::Client, base_url: &str, vm: &SeededVm) {
    let response = http
        .put(format!("{base_url}/api/v1/vms/{}", vm.vm_id))
        .json(&vm.inventory_record())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert!(
        status == 200 || status == 201,
        "{status} {}",
        response.text().await.unwrap_or_default()
    );
}
