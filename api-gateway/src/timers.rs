//! Timers every replica runs: expired step leases are dispatched again, due
//! auto-cleanups start. Replicas may race; each change happens under the
//! job's row lock and is re-checked there (or taken with `SKIP LOCKED`), so
//! it happens once.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::db;
use crate::service::{FailoverService, ServiceError};

/// Runs `tick` every `interval` until `shutdown`; a failed tick is logged
/// and the next one tries again.
async fn every<F, Fut, T>(
    what: &'static str,
    interval: Duration,
    shutdown: CancellationToken,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ServiceError>>,
{
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = tick().await {
            warn!(error = %e, timer = what, "timer run failed");
        }
    }
}

/// Dispatches again the steps whose lease expired.
pub async fn run_lease_expiry(
    service: FailoverService,
    interval: Duration,
    shutdown: CancellationToken,
) {
    every("lease-expiry", interval, shutdown, || {
        service.expire_leases()
    })
    .await;
}

/// Starts the cleanup of test failovers whose `test_duration` is over.
pub async fn run_auto_cleanup(
    service: FailoverService,
    interval: Duration,
    shutdown: CancellationToken,
) {
    every("auto-cleanup", interval, shutdown, || {
        service.run_due_auto_cleanups()
    })
    .await;
}

/// How long published outbox rows are kept (for inspection) before they are purged.
const OUTBOX_RETENTION: Duration = Duration::from_secs(3600);

/// Samples the outbox for the metrics (dispatches due but unpublished,
/// dispatches waiting for their backoff, the age of the oldest due one)
/// and purges rows published long ago.
pub async fn run_outbox_upkeep(
    pool: sqlx::PgPool,
    metrics: crate::metrics::GatewayMetrics,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut next_purge = tokio::time::Instant::now();
    loop {
        match db::outbox::sample(&pool).await {
            Ok((due, delayed, oldest)) => metrics.set_outbox(due, delayed, oldest),
            Err(e) => tracing::debug!(error = %e, "outbox sample failed"),
        }
        if tokio::time::Instant::now() >= next_purge {
            next_purge = tokio::time::Instant::now() + Duration::from_secs(60);
            if let Err(e) = db::outbox::purge_published(&pool, OUTBOX_RETENTION).await {
                tracing::debug!(error = %e, "outbox purge failed");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
