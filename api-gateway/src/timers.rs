//! Timers every replica runs: expired step leases are dispatched again, due
//! auto-cleanups start. Replicas may race; each change happens under the
//! job's row lock and is re-checked there (or taken with `SKIP LOCKED`), so
//! it happens once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::http::rate_limit::RateLimits;
use crate::jobs::service::{FailoverService, ServiceError};

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

/// Forgets idle clients of the rate limiter once a minute.
pub async fn run_rate_limit_upkeep(limits: Arc<RateLimits>, shutdown: CancellationToken) {
    every(
        "rate-limit-upkeep",
        Duration::from_secs(60),
        shutdown,
        || {
            limits.forget_idle_clients();
            std::future::ready(Ok::<(), ServiceError>(()))
        },
    )
    .await;
}

/// Samples the outbox for the metrics: dispatches due but unpublished,
/// dispatches waiting for their backoff, and the age of the oldest due one.
pub async fn run_outbox_sampler(
    pool: sqlx::PgPool,
    metrics: crate::metrics::GatewayMetrics,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let sample: Result<(i64, i64, f64), sqlx::Error> = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE available_at <= now()),
                    count(*) FILTER (WHERE available_at > now()),
                    COALESCE(EXTRACT(EPOCH FROM now() - min(available_at)
                             FILTER (WHERE available_at <= now())), 0)::float8
             FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(&pool)
        .await;
        match sample {
            Ok((due, delayed, oldest)) => metrics.set_outbox(due, delayed, oldest),
            Err(e) => tracing::debug!(error = %e, "outbox sample failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
