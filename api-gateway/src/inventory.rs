//! The replicated-VM inventory: what replication has prepared, and so what
//! can be failed over.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::StoreError;

/// The replication state in which a VM can be failed over.
pub const REPLICATED: &str = "replicated";
/// A VM that was failed over live; registering it again makes it replicated.
pub const FAILED_OVER: &str = "failed-over";
pub const REPLICATION_STATES: [&str; 5] = [REPLICATED, "syncing", "paused", "error", FAILED_OVER];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// The body of `PUT /api/v1/vms/{vm_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRegistration {
    pub vm_name: String,
    pub os_family: OsFamily,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub replication_state: String,
    pub disks: Vec<Disk>,
    #[serde(default)]
    pub nics: Vec<Nic>,
}

/// A registered VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmRecord {
    pub vm_id: Uuid,
    #[serde(flatten)]
    pub spec: VmRegistration,
    pub registered_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
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
        if !REPLICATION_STATES.contains(&self.replication_state.as_str()) {
            problems.push(format!(
                "replication_state must be one of {}",
                REPLICATION_STATES.join(", ")
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
        let mut seen = std::collections::HashSet::new();
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
        let mut sources = std::collections::HashSet::new();
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

    pub fn boot_disk(&self) -> Option<&Disk> {
        self.disks.iter().find(|d| d.boot)
    }
}

type VmRow = (
    Uuid,
    String,
    String,
    i32,
    i64,
    String,
    serde_json::Value,
    serde_json::Value,
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
);

const SELECT_VM: &str = "SELECT vm_id, vm_name, os_family, cpu_count, memory_mb, replication_state, disks, nics, registered_at, updated_at FROM vms";

fn from_row(row: VmRow) -> Result<VmRecord, StoreError> {
    let (vm_id, vm_name, os, cpu, mem, state, disks, nics, registered_at, updated_at) = row;
    let os_family = match os.as_str() {
        "windows" => OsFamily::Windows,
        _ => OsFamily::Linux,
    };
    Ok(VmRecord {
        vm_id,
        spec: VmRegistration {
            vm_name,
            os_family,
            cpu_count: u32::try_from(cpu).unwrap_or_default(),
            memory_mb: u64::try_from(mem).unwrap_or_default(),
            replication_state: state,
            disks: serde_json::from_value(disks).map_err(StoreError::corrupt)?,
            nics: serde_json::from_value(nics).map_err(StoreError::corrupt)?,
        },
        registered_at,
        updated_at,
    })
}

/// Inserts or replaces a registration; returns the record and whether it is new.
pub async fn upsert(
    pool: &PgPool,
    vm_id: Uuid,
    spec: &VmRegistration,
) -> Result<(VmRecord, bool), StoreError> {
    let disks = serde_json::to_value(&spec.disks).map_err(StoreError::corrupt)?;
    let nics = serde_json::to_value(&spec.nics).map_err(StoreError::corrupt)?;
    let (inserted,): (bool,) = sqlx::query_as(
        "INSERT INTO vms (vm_id, vm_name, os_family, cpu_count, memory_mb, replication_state, disks, nics)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (vm_id) DO UPDATE SET vm_name = EXCLUDED.vm_name, os_family = EXCLUDED.os_family,
           cpu_count = EXCLUDED.cpu_count, memory_mb = EXCLUDED.memory_mb,
           replication_state = EXCLUDED.replication_state, disks = EXCLUDED.disks,
           nics = EXCLUDED.nics, updated_at = now()
         RETURNING (xmax = 0)",
    )
    .bind(vm_id)
    .bind(&spec.vm_name)
    .bind(spec.os_family.as_str())
    .bind(i32::try_from(spec.cpu_count).unwrap_or(i32::MAX))
    .bind(i64::try_from(spec.memory_mb).unwrap_or(i64::MAX))
    .bind(&spec.replication_state)
    .bind(disks)
    .bind(nics)
    .fetch_one(pool)
    .await?;
    let record = get(pool, vm_id).await?.ok_or(StoreError::Vanished)?;
    Ok((record, inserted))
}

pub async fn get(pool: &PgPool, vm_id: Uuid) -> Result<Option<VmRecord>, StoreError> {
    let row: Option<VmRow> = sqlx::query_as(&format!("{SELECT_VM} WHERE vm_id = $1"))
        .bind(vm_id)
        .fetch_optional(pool)
        .await?;
    row.map(from_row).transpose()
}

/// [`get`] within a transaction.
pub async fn get_in(
    tx: &mut sqlx::PgConnection,
    vm_id: Uuid,
) -> Result<Option<VmRecord>, StoreError> {
    let row: Option<VmRow> = sqlx::query_as(&format!("{SELECT_VM} WHERE vm_id = $1"))
        .bind(vm_id)
        .fetch_optional(&mut *tx)
        .await?;
    row.map(from_row).transpose()
}

pub async fn list(pool: &PgPool) -> Result<Vec<VmRecord>, StoreError> {
    let rows: Vec<VmRow> = sqlx::query_as(&format!("{SELECT_VM} ORDER BY vm_name, vm_id"))
        .fetch_all(pool)
        .await?;
    rows.into_iter().map(from_row).collect()
}

/// What happened to a delete.
#[derive(Debug, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    NotFound,
    /// A job of the VM is not finished.
    Busy {
        job_id: String,
    },
}

pub async fn delete(pool: &PgPool, vm_id: Uuid) -> Result<Deletion, StoreError> {
    let mut tx = pool.begin().await?;
    let exists: Option<(Uuid,)> =
        sqlx::query_as("SELECT vm_id FROM vms WHERE vm_id = $1 FOR UPDATE")
            .bind(vm_id)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Ok(Deletion::NotFound);
    }
    let active: Option<(String,)> = sqlx::query_as(
        "SELECT job_id FROM failover_jobs WHERE vm_id = $1 AND holds_vm
         ORDER BY created_at LIMIT 1",
    )
    .bind(vm_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((job_id,)) = active {
        return Ok(Deletion::Busy { job_id });
    }
    sqlx::query("DELETE FROM vms WHERE vm_id = $1")
        .bind(vm_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Deletion::Deleted)
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
            replication_state: REPLICATED.into(),
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
}
