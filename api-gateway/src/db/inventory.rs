//! The replicated-VM inventory (`vms`).

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use failover_core::admission::RegisteredVm;
use failover_core::holds::Holder;
use failover_core::{JobStatus, JobType};
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

/// A VM as an admission reads it, locked.
#[derive(Debug, Clone)]
pub struct LockedVm {
    pub vm: RegisteredVm,
    /// The jobs holding it, oldest first.
    pub holders: Vec<Holder>,
    /// Ids of its jobs created lately: the ones a new job's id may collide with.
    pub recent_job_ids: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct LockedVmRow {
    #[sqlx(flatten)]
    vm: VmRow,
    now: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct VmJobsRow {
    vm_id: Uuid,
    holder_ids: Vec<String>,
    holder_types: Vec<Db<JobType>>,
    holder_statuses: Vec<Db<JobStatus>>,
    holder_started: Vec<bool>,
    recent_job_ids: Vec<String>,
}

/// Locks the rows of `vm_ids` (in the order of their ids) and reads them
/// with their holders and their recent job ids; with the database's clock.
pub async fn lock_many(
    tx: &mut PgConnection,
    vm_ids: &[Uuid],
) -> Result<(Vec<LockedVm>, Option<DateTime<Utc>>), StoreError> {
    // The rows first: the holders are read by a statement that starts after
    // every lock is held, so that it sees what an admission that held one
    // before committed.
    let locked: Vec<LockedVmRow> = sqlx::query_as(
        "SELECT vm_id, vm_name, os_family, cpu_count, memory_mb, replication_state, disks, nics,
                registered_at, updated_at, now() AS now
         FROM vms JOIN unnest($1::uuid[]) AS ids(id) ON vm_id = ids.id
         ORDER BY vm_id FOR UPDATE OF vms",
    )
    .bind(vm_ids)
    .fetch_all(&mut *tx)
    .await?;
    let found: Vec<Uuid> = locked.iter().map(|r| r.vm.vm_id).collect();
    let jobs: Vec<VmJobsRow> = sqlx::query_as(
        "SELECT ids.id AS vm_id, h.*, r.*
         FROM unnest($1::uuid[]) AS ids(id),
         LATERAL (
             SELECT COALESCE(array_agg(j.job_id ORDER BY j.created_at, j.job_id), '{}') AS holder_ids,
                    COALESCE(array_agg(j.job_type ORDER BY j.created_at, j.job_id), '{}') AS holder_types,
                    COALESCE(array_agg(j.status ORDER BY j.created_at, j.job_id), '{}') AS holder_statuses,
                    COALESCE(array_agg(EXISTS (SELECT 1 FROM failover_job_steps s
                        WHERE s.job_id = j.job_id AND s.status NOT IN ('pending', 'skipped', 'cancelled'))
                        ORDER BY j.created_at, j.job_id), '{}') AS holder_started
             FROM failover_jobs j WHERE j.vm_id = ids.id AND j.holds_vm) h,
         LATERAL (
             SELECT COALESCE(array_agg(j.job_id), '{}') AS recent_job_ids
             FROM failover_jobs j
             WHERE j.vm_id = ids.id AND j.created_at > now() - interval '5 minutes') r",
    )
    .bind(&found)
    .fetch_all(&mut *tx)
    .await?;
    let mut jobs: std::collections::HashMap<Uuid, VmJobsRow> =
        jobs.into_iter().map(|j| (j.vm_id, j)).collect();
    let rows: Vec<(LockedVmRow, VmJobsRow)> = locked
        .into_iter()
        .filter_map(|vm| {
            let of_vm = jobs.remove(&vm.vm.vm_id)?;
            Some((vm, of_vm))
        })
        .collect();
    let now = rows.first().map(|(r, _)| r.now);
    let vms = rows
        .into_iter()
        .map(|(row, jobs)| {
            let holders = jobs
                .holder_ids
                .into_iter()
                .zip(jobs.holder_types)
                .zip(jobs.holder_statuses)
                .zip(jobs.holder_started)
                .map(|(((job_id, job_type), status), started)| Holder {
                    job_id,
                    job_type: job_type.0,
                    status: status.0,
                    started,
                })
                .collect();
            let record = VmRecord::from(row.vm);
            LockedVm {
                vm: RegisteredVm {
                    vm_id: record.vm_id,
                    spec: record.spec,
                },
                holders,
                recent_job_ids: jobs.recent_job_ids,
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
