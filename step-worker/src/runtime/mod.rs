//! The worker process: consumes step tasks from RabbitMQ, claims each over
//! gRPC before acking it, executes it with heartbeats, and reports the
//! outcome. Stateless: everything a step needs is in its task.

mod consumer;
pub mod coordination;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use failover_core::Settings;
use failover_core::pipeline::StepName;

use crate::steps::Executors;
use coordination::Coordinator;

/// The step names a worker subscribes to: `["*"]` for all.
pub fn subscribed_steps(names: &[String]) -> anyhow::Result<Vec<StepName>> {
    if names.iter().any(|n| n == "*") {
        return Ok(StepName::ALL.to_vec());
    }
    let mut steps = Vec::new();
    for name in names {
        let step = StepName::parse(name.trim())
            .with_context(|| format!("worker.steps: unknown step {name:?}"))?;
        if !steps.contains(&step) {
            steps.push(step);
        }
    }
    anyhow::ensure!(
        !steps.is_empty(),
        "worker.steps must name at least one step"
    );
    Ok(steps)
}

/// This worker's id: configured, or `<hostname>-<pid>`.
pub fn worker_id(settings: &Settings) -> String {
    if !settings.worker.worker_id.trim().is_empty() {
        return settings.worker.worker_id.trim().to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".to_owned());
    format!("{host}-{}", std::process::id())
}

/// What every delivery handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub settings: Arc<Settings>,
    pub coordinator: Coordinator,
    pub executors: Executors,
    /// Cancelled when the grace period of a shutdown is over: steps still
    /// running are stopped and handed back.
    pub abort: CancellationToken,
}

/// Runs until `shutdown`; then stops taking steps, lets the ones in flight
/// finish within `worker.shutdown_grace`, and hands back the rest.
pub async fn run(settings: Arc<Settings>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let steps = subscribed_steps(&settings.worker.steps)?;
    let id = worker_id(&settings);
    let shared = Arc::new(Shared {
        coordinator: Coordinator::new(settings.worker.gateway_url.as_str(), id.clone())?,
        executors: Executors::new(&settings)?,
        abort: CancellationToken::new(),
        settings: settings.clone(),
    });
    let tracker = TaskTracker::new();
    info!(worker_id = %id, steps = ?steps.iter().map(|s| s.as_str()).collect::<Vec<_>>(), "worker starting");

    let mut delay = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match consumer::session(&shared, &steps, &tracker, &shutdown).await {
            Ok(()) => break,
            Err(e) => {
                warn!(error = %format!("{e:#}"), retry_in_ms = delay.as_millis() as u64, "broker session ended")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }

    tracker.close();
    info!(
        in_flight = tracker.len(),
        "worker stopping; waiting for steps in flight"
    );
    if tokio::time::timeout(settings.worker.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            in_flight = tracker.len(),
            "grace period over; handing back steps in flight"
        );
        shared.abort.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), tracker.wait()).await;
    }
    info!("worker stopped");
    Ok(())
}
