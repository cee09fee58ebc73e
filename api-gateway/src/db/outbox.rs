//! The outbox the relay publishes from: due rows taken with `FOR UPDATE
//! SKIP LOCKED` (replicas never publish a row twice at once), marked
//! published in one statement per batch, and published rows purged once
//! they are old.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::StoreError;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub job_id: String,
    pub step_name: String,
    pub attempt: i32,
    pub correlation_id: Uuid,
    pub routing_key: String,
    pub payload: Vec<u8>,
    pub traceparent: Option<String>,
    pub vm_id: Option<Uuid>,
}

/// Locks and reads up to `limit` due rows nobody published, oldest first:
/// delayed dispatches whose time came, and the others once they are
/// `grace` old (before, the fast path of the replica that wrote them has
/// them).
pub async fn take_due(
    tx: &mut PgConnection,
    limit: i64,
    grace: Duration,
) -> Result<Vec<OutboxRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT o.id, o.job_id, o.step_name, o.attempt, o.correlation_id, o.routing_key,
                o.payload, o.traceparent, j.vm_id
         FROM outbox o LEFT JOIN failover_jobs j ON j.job_id = o.job_id
         WHERE o.published_at IS NULL AND o.available_at <= now()
           AND (o.available_at > o.created_at OR o.created_at < now() - make_interval(secs => $2))
         ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED",
    )
    .bind(limit)
    .bind(grace.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?)
}

/// Marks rows the broker confirmed as published.
pub async fn mark_published(db: &mut PgConnection, ids: &[i64]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE outbox o SET published_at = now(), publish_attempts = o.publish_attempts + 1
         FROM unnest($1::bigint[]) AS u(id) WHERE o.id = u.id",
    )
    .bind(ids)
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// Records a failed publish of rows; they stay due.
pub async fn mark_failed(db: &mut PgConnection, ids: &[i64], error: &str) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE outbox o SET publish_attempts = o.publish_attempts + 1, last_error = $2
         FROM unnest($1::bigint[]) AS u(id) WHERE o.id = u.id",
    )
    .bind(ids)
    .bind(error)
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// Dispatches due but unpublished, dispatches waiting for their backoff,
/// and the age in seconds of the oldest due one.
pub async fn sample(pool: &PgPool) -> Result<(i64, i64, f64), StoreError> {
    Ok(sqlx::query_as(
        "SELECT count(*) FILTER (WHERE available_at <= now()),
                count(*) FILTER (WHERE available_at > now()),
                COALESCE(EXTRACT(EPOCH FROM now() - min(available_at)
                         FILTER (WHERE available_at <= now())), 0)::float8
         FROM outbox WHERE published_at IS NULL",
    )
    .fetch_one(pool)
    .await?)
}

/// Deletes rows published longer than `retention` ago, a batch at a time,
/// oldest first (rows are published in about the order of their ids);
/// returns how many.
pub async fn purge_published(pool: &PgPool, retention: Duration) -> Result<u64, StoreError> {
    // Only the oldest rows are looked at: the scan stays short whatever
    // the size of the table.
    let done = sqlx::query(
        "DELETE FROM outbox
         WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT 10000)
           AND published_at < now() - make_interval(secs => $1)",
    )
    .bind(retention.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
