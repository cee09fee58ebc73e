//! The worker process: consumes step tasks from RabbitMQ, claims each over
//! gRPC before acking it, executes it with heartbeats, and reports the
//! outcome. Stateless: everything a step needs is in its task. A small HTTP
//! listener serves its metrics and health ([`status`]).

mod consumer;
pub mod coordination;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use failover_core::pipeline::StepName;
use failover_platform::Settings;

use crate::metrics::WorkerMetrics;
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
    pub metrics: WorkerMetrics,
    /// Permits held from a delivery to its report. They outlive a broker
    /// session: a step keeps its permits while the worker reconnects.
    pub slots: Slots,
}

#[derive(Debug, Clone)]
pub(crate) struct Slots {
    /// One per step at once (`worker.concurrency`).
    pub all: Arc<Semaphore>,
    /// One per virt-customize run at once (`worker.virtio_concurrency`).
    pub virtio: Arc<Semaphore>,
}

/// The listeners a worker serves on, bound before it runs (port 0 in tests).
#[derive(Debug, Default)]
pub struct Listeners {
    /// `/metrics` and `/health/*`, when `worker.metrics_listen` is set.
    pub status: Option<TcpListener>,
}

impl Listeners {
    /// Binds what the settings ask for.
    pub async fn bind(settings: &Settings) -> anyhow::Result<Self> {
        let status = match settings.worker.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "binding worker.metrics_listen {addr} (workers on one host need a port each)"
                )
            })?),
            None => None,
        };
        Ok(Listeners { status })
    }
}

/// Binds the listeners the settings name and [`serve`]s.
pub async fn run(settings: Arc<Settings>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&settings).await?;
    serve(settings, listeners, shutdown).await
}

/// Runs until `shutdown`; then stops taking steps, lets the ones in flight
/// finish within `worker.shutdown_grace`, and hands back the rest.
pub async fn serve(
    settings: Arc<Settings>,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let steps = subscribed_steps(&settings.worker.steps)?;
    let id = worker_id(&settings);
    let metrics = WorkerMetrics::new();
    let shared = Arc::new(Shared {
        coordinator: Coordinator::new(settings.worker.gateway_url.as_str(), id.clone())?,
        executors: Executors::with_call_metrics(&settings, metrics.calls())?,
        abort: CancellationToken::new(),
        settings: settings.clone(),
        metrics: metrics.clone(),
        slots: Slots {
            all: Arc::new(Semaphore::new(usize::from(
                settings.worker.concurrency.max(1),
            ))),
            virtio: Arc::new(Semaphore::new(usize::from(
                settings.worker.virtio_concurrency.max(1),
            ))),
        },
    });
    let tracker = TaskTracker::new();
    info!(worker_id = %id, steps = ?steps.iter().map(|s| s.as_str()).collect::<Vec<_>>(), "worker starting");
    // The status listener outlives the consumer: it answers (not ready)
    // while the worker drains.
    let status_stop = CancellationToken::new();
    let status_task = listeners.status.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "serving /metrics and /health");
        }
        tokio::spawn(status::serve(
            listener,
            metrics.clone(),
            status_stop.clone(),
        ))
    });

    let mut delay = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let mut connected = false;
        let session = consumer::session(&shared, &steps, &tracker, &shutdown, &mut connected).await;
        metrics.set_broker_connected(false);
        if connected {
            // The session worked until now: this is a new outage, whose
            // backoff starts afresh.
            delay = Duration::from_millis(200);
        }
        match session {
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
    status_stop.cancel();
    if let Some(task) = status_task
        && let Ok(Err(e)) = task.await
    {
        warn!(error = %e, "the status listener failed");
    }
    info!("worker stopped");
    Ok(())
}
