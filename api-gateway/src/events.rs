//! Job change notifications across gateway replicas: every transaction that
//! changes a job sends `NOTIFY failover_job_events, '<job_id>'`; each replica
//! listens once and fans the ids out to its watchers through a bounded
//! broadcast channel. A watcher that lags re-reads the state, so a slow
//! client never grows memory and never misses a recorded transition.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub const JOB_EVENTS_CHANNEL: &str = "failover_job_events";

/// How many notifications a slow watcher may fall behind before it re-reads.
const CAPACITY: usize = 1024;

#[derive(Debug, Clone)]
pub struct JobEvents {
    sender: broadcast::Sender<String>,
    /// Whether this replica listens for changes now.
    listening: Arc<AtomicBool>,
}

impl Default for JobEvents {
    fn default() -> Self {
        JobEvents {
            sender: broadcast::channel(CAPACITY).0,
            listening: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl JobEvents {
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.sender.subscribe()
    }

    /// Whether changes made on any replica reach this one's watchers now.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Listens until `shutdown`, reconnecting with backoff.
    pub async fn run(self, pool: PgPool, shutdown: CancellationToken) {
        let mut delay = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => match listener.listen(JOB_EVENTS_CHANNEL).await {
                    Ok(()) => {
                        info!("listening for job changes");
                        self.listening.store(true, Ordering::Release);
                        delay = Duration::from_millis(200);
                        loop {
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                message = listener.recv() => match message {
                                    Ok(n) => {
                                        // No receivers is fine.
                                        let _ = self.sender.send(n.payload().to_owned());
                                    }
                                    Err(e) => {
                                        self.listening.store(false, Ordering::Release);
                                        warn!(error = %e, "job change listener lost its connection");
                                        // Watchers re-read what they may have missed.
                                        let _ = self.sender.send(String::new());
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => warn!(error = %e, "cannot listen for job changes"),
                },
                Err(e) => warn!(error = %e, "cannot connect to listen for job changes"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}
