//! The replicated-VM inventory (`vms`).

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use failover_core::admission::RegisteredVm;
use failover_core::inventory::{Disk, Nic, OsFamily, VmRegistration};

use super::StoreError;
use super::types::Db;

/// A registered VM, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VmRecord {
    pub vm_id: Uuid,
    #[serde(flatten)]
    pub spec: VmRegistration,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct VmRow {
    vm_id: Uuid,
    vm_name: String,
    os_family: Db<OsFamily>,
    cpu_count: i32,
    memory_mb: i64,
    replication_state: String,
    disks: Json<Vec<Disk>>,
    nics: Json<Vec<Nic>>,
    registered_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<VmRow> for VmRecord {
    fn from(row: VmRow) -> Self {
        VmRecord {
            vm_id: row.vm_id,
            spec: VmRegistration {
                vm_name: row.vm_name,
                os_family: row.os_family.0,
                cpu_count: u32::try_from(row.cpu_count).unwrap_or_default(),
                memory_mb: u64::try_from(row.memory_mb).unwrap_or_default(),
                replication_state: row.replication_state,
                disks: row.disks.0,
                nics: row.nics.0,
            },
            registered_at: row.registered_at,
            updated_at: row.updated_at,
        }
    }
}

const SELECT_VM: &str = "SELECT vm_id, vm_name, os_family, cpu_count, memory_mb, \
    replication_state, disks, nics, registered_at, updated_at FROM vms";

/// Inserts or replaces a registration; returns the record and whether it is new.
pub async fn upsert(
    pool: &PgPool,
    vm_id: Uuid,
    spec: &VmRegistration,
) -> Result<(VmRecord, bool), StoreError> {
    let (row, inserted): (VmRow, bool) = {
        let row: VmRowInserted = sqlx::query_as(
            "INSERT INTO vms (vm_id, vm_name, os_family, cpu_count, memory_mb, replication_state, disks, nics)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (vm_id) DO UPDATE SET vm_name = EXCLUDED.vm_name, os_family = EXCLUDED.os_family,
               cpu_count = EXCLUDED.cpu_count, memory_mb = EXCLUDED.memory_mb,
               replication_state = EXCLUDED.replication_state, disks = EXCLUDED.disks,
               nics = EXCLUDED.nics, updated_at = now()
             RETURNING vm_id, vm_name, os_family, cpu_count, memory_mb, replication_state, disks,
               nics, registered_at, updated_at, (xmax = 0) AS inserted",
        )
        .bind(vm_id)
        .bind(&spec.vm_name)
        .bind(Db(spec.os_family))
        .bind(i32::try_from(spec.cpu_count).unwrap_or(i32::MAX))
        .bind(i64::try_from(spec.memory_mb).unwrap_or(i64::MAX))
        .bind(&spec.replication_state)
        .bind(Json(&spec.disks))
        .bind(Json(&spec.nics))
        .fetch_one(pool)
        .await?;
        (row.vm, row.inserted)
    };
    Ok((row.into(), inserted))
}

#[derive(sqlx::FromRow)]
struct VmRowInserted {
    #[sqlx(flatten)]
    vm: VmRow,
    inserted: bool,
}

pub async fn get(pool: &PgPool, vm_id: Uuid) -> Result<Option<VmRecord>, StoreError> {
    let row: Option<VmRow> = sqlx::query_as(&format!("{SELECT_VM} WHERE vm_id = $1"))
        .bind(vm_id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(Into::into))
}

#[derive(sqlx::FromRow)]
struct LockedVmRow {
    #[sqlx(flatten)]
    vm: VmRow,
    now: DateTime<Utc>,
}

/// Locks the VM's row, so admissions of one VM are serialized, and reads it
/// with the database's clock.
pub async fn lock(
    tx: &mut PgConnection,
    vm_id: Uuid,
) -> Result<Option<(RegisteredVm, DateTime<Utc>)>, StoreError> {
    let row: Option<LockedVmRow> = sqlx::query_as(
        "SELECT vm_id, vm_name, os_family, cpu_count, memory_mb, replication_state, disks, nics,
                registered_at, updated_at, now() AS now
         FROM vms WHERE vm_id = $1 FOR UPDATE",
    )
    .bind(vm_id)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(row.map(|row| {
        let record = VmRecord::from(row.vm);
        (
            RegisteredVm {
                vm_id: record.vm_id,
                spec: record.spec,
            },
            row.now,
        )
    }))
}

/// Locks the rows of `vm_ids` (in the order of their ids) and reads them,
/// with the database's clock.
pub async fn lock_many(
    tx: &mut PgConnection,
    vm_ids: &[Uuid],
) -> Result<(Vec<RegisteredVm>, Option<DateTime<Utc>>), StoreError> {
    let rows: Vec<LockedVmRow> = sqlx::query_as(
        "SELECT vm_id, vm_name, os_family, cpu_count, memory_mb, replication_state, disks, nics,
                registered_at, updated_at, now() AS now
         FROM vms JOIN unnest($1::uuid[]) AS ids(id) ON vm_id = ids.id
         ORDER BY vm_id FOR UPDATE OF vms",
    )
    .bind(vm_ids)
    .fetch_all(&mut *tx)
    .await?;
    let now = rows.first().map(|r| r.now);
    let vms = rows
        .into_iter()
        .map(|row| {
            let record = VmRecord::from(row.vm);
            RegisteredVm {
                vm_id: record.vm_id,
                spec: record.spec,
            }
        })
        .collect();
    Ok((vms, now))
}

pub async fn list(pool: &PgPool) -> Result<Vec<VmRecord>, StoreError> {
    let rows: Vec<VmRow> = sqlx::query_as(&format!("{SELECT_VM} ORDER BY vm_name, vm_id"))
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Whether the VM is registered; locks its row.
pub async fn lock_existing(tx: &mut PgConnection, vm_id: Uuid) -> Result<bool, StoreError> {
    let exists: Option<Uuid> =
        sqlx::query_scalar("SELECT vm_id FROM vms WHERE vm_id = $1 FOR UPDATE")
            .bind(vm_id)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(exists.is_some())
}

pub async fn delete(tx: &mut PgConnection, vm_id: Uuid) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM vms WHERE vm_id = $1")
        .bind(vm_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
