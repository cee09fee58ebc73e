//! Timers every replica runs: expired step leases are dispatched again.
//! Replicas may race; each change happens under the job's row lock and is
//! re-checked there, so it happens once.

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
