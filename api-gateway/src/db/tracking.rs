//! The audit trail (`job_tracking`): what the status streams follow.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use failover_core::effects::AuditOperation;

use super::StoreError;
use super::types::Db;

/// One recorded change of a job.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TrackingRow {
    pub id: i64,
    #[sqlx(try_from = "Db<AuditOperation>")]
    pub operation: AuditOperation,
    pub status: String,
    pub error_message: Option<String>,
    pub details: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

/// The job's recorded changes after `after_id`, in order.
pub async fn since(
    pool: &PgPool,
    job_id: &str,
    after_id: i64,
) -> Result<Vec<TrackingRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, operation, status, error_message, details, created_at FROM job_tracking
         WHERE job_id = $1 AND id > $2 ORDER BY id",
    )
    .bind(job_id)
    .bind(after_id)
    .fetch_all(pool)
    .await?)
}

/// The id of the job's latest recorded change (0 for none).
pub async fn last_id(pool: &PgPool, job_id: &str) -> Result<i64, StoreError> {
    let id: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM job_tracking WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(pool)
        .await?;
    Ok(id.unwrap_or(0))
}
