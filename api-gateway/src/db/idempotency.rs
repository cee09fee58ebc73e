//! `Idempotency-Key` rows: the key, the endpoint, a hash of the request and
//! the job it started (or acted on), written in the job's own transaction;
//! the answer is rendered again from the job by the HTTP layer.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::StoreError;

/// A key as a request brought it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub endpoint: String,
    pub request_hash: String,
}

/// What a key stands for.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Remembered {
    pub request_hash: String,
    pub job_id: String,
    pub response_status: i32,
    /// What the request did to its job (the status an operator's command
    /// left it in); empty for a start.
    pub outcome: Option<String>,
    /// The request's correlation id, when the answer shows it and the job
    /// does not (an operator's command).
    pub correlation_id: Option<Uuid>,
}

pub async fn find(
    pool: &PgPool,
    key: &str,
    endpoint: &str,
) -> Result<Option<Remembered>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT request_hash, job_id, response_status, outcome, correlation_id FROM idempotency_keys
         WHERE idempotency_key = $1 AND endpoint = $2",
    )
    .bind(key)
    .bind(endpoint)
    .fetch_optional(pool)
    .await?)
}

/// [`find`] within a transaction.
pub async fn find_in(
    tx: &mut PgConnection,
    key: &str,
    endpoint: &str,
) -> Result<Option<Remembered>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT request_hash, job_id, response_status, outcome, correlation_id FROM idempotency_keys
         WHERE idempotency_key = $1 AND endpoint = $2",
    )
    .bind(key)
    .bind(endpoint)
    .fetch_optional(&mut *tx)
    .await?)
}

/// Records `key` for `job_id`; false when another request recorded it first.
pub async fn record(
    tx: &mut PgConnection,
    key: &IdempotencyKey,
    job_id: &str,
    response_status: u16,
    outcome: Option<&str>,
    correlation_id: Option<Uuid>,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (idempotency_key, endpoint, request_hash, job_id,
           response_status, outcome, correlation_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(&key.key)
    .bind(&key.endpoint)
    .bind(&key.request_hash)
    .bind(job_id)
    .bind(i32::from(response_status))
    .bind(outcome)
    .bind(correlation_id)
    .execute(&mut *tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}
