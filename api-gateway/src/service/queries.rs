//! What the API reads: jobs with their steps, lists, the audit trail the
//! status streams follow, and the inventory (which it also writes: a
//! registration is a single upsert, a removal is refused while a job of
//! the VM holds it).

use uuid::Uuid;

use failover_core::holds;
use failover_core::inventory::VmRegistration;

use super::{FailoverService, ServiceError};
use crate::db::idempotency::{IdempotencyKey, Remembered};
use crate::db::inventory::VmRecord;
use crate::db::jobs::{JobDetail, JobFilter, JobRow, Total};
use crate::db::tracking::TrackingRow;
use crate::db::{self, StoreError};

impl FailoverService {
    pub async fn job_detail(&self, job_id: &str) -> Result<JobDetail, ServiceError> {
        db::jobs::detail(&self.pool, job_id)
            .await?
            .ok_or_else(|| ServiceError::JobNotFound(job_id.to_owned()))
    }

    pub async fn job_detail_by_correlation(
        &self,
        correlation_id: Uuid,
    ) -> Result<JobDetail, ServiceError> {
        let job_id = db::jobs::by_correlation(&self.pool, correlation_id)
            .await?
            .ok_or_else(|| ServiceError::JobNotFound(correlation_id.to_string()))?;
        self.job_detail(&job_id).await
    }

    pub async fn list_jobs(
        &self,
        filter: &JobFilter,
    ) -> Result<(Vec<JobRow>, Total), ServiceError> {
        Ok(db::jobs::list(&self.pool, filter).await?)
    }

    /// The job's recorded changes after `after`, in order.
    pub async fn changes_since(
        &self,
        job_id: &str,
        after: i64,
    ) -> Result<Vec<TrackingRow>, ServiceError> {
        Ok(db::tracking::since(&self.pool, job_id, after).await?)
    }

    /// The position of the job's last recorded change.
    pub async fn last_change(&self, job_id: &str) -> Result<i64, ServiceError> {
        Ok(db::tracking::last_id(&self.pool, job_id).await?)
    }

    /// The remembered answer of an earlier request with `key`, if any.
    pub async fn remembered(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<Remembered>, ServiceError> {
        Ok(db::idempotency::find(&self.pool, &key.key, &key.endpoint).await?)
    }

    /// Registers or replaces a VM; returns it and whether it is new.
    pub async fn register_vm(
        &self,
        vm_id: Uuid,
        spec: &VmRegistration,
    ) -> Result<(VmRecord, bool), ServiceError> {
        Ok(db::inventory::upsert(&self.pool, vm_id, spec).await?)
    }

    pub async fn get_vm(&self, vm_id: Uuid) -> Result<VmRecord, ServiceError> {
        db::inventory::get(&self.pool, vm_id)
            .await?
            .ok_or_else(|| ServiceError::VmNotFound {
                vm_id,
                reason: "VM not found in the inventory".into(),
            })
    }

    pub async fn list_vms(&self) -> Result<Vec<VmRecord>, ServiceError> {
        Ok(db::inventory::list(&self.pool).await?)
    }

    /// Removes a VM from the inventory, unless a job of it holds it.
    pub async fn remove_vm(&self, vm_id: Uuid) -> Result<(), ServiceError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        if !db::inventory::lock_existing(&mut tx, vm_id).await? {
            return Err(ServiceError::VmNotFound {
                vm_id,
                reason: "VM not found in the inventory".into(),
            });
        }
        let holders = db::jobs::holders(&mut tx, vm_id).await?;
        if let Some(holder) = holds::blocks_removal(&holders) {
            return Err(ServiceError::conflict(
                format!(
                    "VM has an active job {}; wait for it to finish",
                    holder.job_id
                ),
                holder.job_id.clone(),
            ));
        }
        db::inventory::delete(&mut tx, vm_id).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }
}

/// The list filters as a caller gives them (REST query or gRPC request).
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub status: Option<String>,
    pub job_type: Option<String>,
    pub vm_id: Option<String>,
    pub correlation_id: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// Jobs a page lists when the caller does not say.
pub const DEFAULT_LIMIT: i64 = 50;
/// The most a page lists.
pub const MAX_LIMIT: i64 = 500;

/// The filter, or every problem with the request.
pub fn job_filter(req: ListRequest) -> Result<JobFilter, Vec<String>> {
    use failover_core::{JobStatus, JobType};
    let mut problems = Vec::new();
    let status = match req.status.filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => JobStatus::parse(&s).or_else(|| {
            let known: Vec<_> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
            problems.push(format!("status {s:?} is not one of {}", known.join(", ")));
            None
        }),
    };
    let job_type = match req.job_type.filter(|s| !s.is_empty()) {
        None => None,
        Some(t) => JobType::parse(&t).or_else(|| {
            problems.push(format!("type {t:?} is not one of test, live, cleanup"));
            None
        }),
    };
    let mut uuid = |name: &str, value: Option<String>| {
        let value = value.filter(|v| !v.is_empty())?;
        Uuid::parse_str(value.trim())
            .map_err(|_| problems.push(format!("{name} {value:?} is not a UUID")))
            .ok()
    };
    let vm_id = uuid("vm_id", req.vm_id);
    let correlation_id = uuid("correlation_id", req.correlation_id);
    let limit = req.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        problems.push(format!("limit must be between 1 and {MAX_LIMIT}"));
    }
    let offset = req.offset.unwrap_or(0);
    if offset < 0 {
        problems.push("offset must not be negative".into());
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(JobFilter {
        status,
        job_type,
        vm_id,
        correlation_id,
        created_since: None,
        limit,
        offset,
    })
}
