//! Timers every replica runs: expired step leases are dispatched again, due
//! auto-cleanups start. Replicas may race; each change happens under the
//! job's row lock and is re-checked there (or taken with `SKIP LOCKED`), so
//! it happens once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::jobs::service::FailoverService;

pub async fn run_lease_expiry(
    service: FailoverService,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = service.expire_leases().await {
            warn!(error = %e, "lease expiry check failed");
        }
    }
}

/// Starts the cleanup of test failovers whose `test_duration` is over.
pub async fn run_auto_cleanup(
    service: FailoverService,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = service.run_due_auto_cleanups().await {
            warn!(error = %e, "auto-cleanup check failed");
        }
    }
}

/// Forgets idle clients of the rate limiter once a minute.
pub async fn run_rate_limit_upkeep(
    limits: std::sync::Arc<crate::http::rate_limit::RateLimits>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        limits.forget_idle_clients();
    }
}
