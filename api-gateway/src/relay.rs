//! The outbox relay: publishes committed step dispatches to RabbitMQ with
//! publisher confirms. Rows are taken with `FOR UPDATE SKIP LOCKED`, so any
//! number of gateway replicas relay without publishing a row twice; a crash
//! between the broker's confirm and the commit can publish a row again, which
//! the attempt-fenced claim absorbs.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use failover_core::pipeline::StepName;
use failover_core::queue::{self, ConfirmedPublisher, OutgoingMessage, QueueError, StepTopology};

use crate::jobs::store::OUTBOX_CHANNEL;

const BATCH: i64 = 50;

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Broker(#[from] QueueError),
}

#[derive(Debug, Clone)]
pub struct OutboxRelay {
    pool: PgPool,
    amqp_url: SecretString,
    topology: StepTopology,
    poll_interval: Duration,
}

type OutboxRow = (i64, String, String, i32, Uuid, String, Vec<u8>);

impl OutboxRelay {
    pub fn new(
        pool: PgPool,
        amqp_url: SecretString,
        topology: StepTopology,
        poll_interval: Duration,
    ) -> Self {
        OutboxRelay {
            pool,
            amqp_url,
            topology,
            poll_interval,
        }
    }

    /// Relays until `shutdown`, reconnecting to the broker and the database
    /// with backoff whenever either goes away.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut delay = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            match self.session(&shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "outbox relay interrupted")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    async fn session(&self, shutdown: &CancellationToken) -> Result<(), RelayError> {
        let connection =
            queue::connect(self.amqp_url.expose_secret(), "failover-gateway-relay").await?;
        let publisher = ConfirmedPublisher::new(&connection).await?;
        self.topology
            .declare(publisher.channel(), &StepName::ALL)
            .await?;
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(OUTBOX_CHANNEL).await?;
        info!("outbox relay connected");
        loop {
            let published = self.publish_due(&publisher).await?;
            if published as i64 == BATCH {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = connection.close(200, "shutdown".into()).await;
                    return Ok(());
                }
                notification = listener.recv() => { notification?; }
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// Publishes the due rows of one batch; returns how many.
    async fn publish_due(&self, publisher: &ConfirmedPublisher) -> Result<usize, RelayError> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT id, job_id, step_name, attempt, correlation_id, routing_key, payload FROM outbox
             WHERE published_at IS NULL AND available_at <= now()
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let exchange = self.topology.exchange();
        let mut published = 0;
        for (id, job_id, step_name, attempt, correlation_id, routing_key, payload) in &rows {
            let message_id = format!("{job_id}/{step_name}/{attempt}");
            let result = publisher
                .publish(OutgoingMessage {
                    exchange: &exchange,
                    routing_key,
                    payload,
                    message_id: &message_id,
                    headers: vec![
                        (queue::headers::CORRELATION_ID, correlation_id.to_string()),
                        (queue::headers::JOB_ID, job_id.clone()),
                        (queue::headers::STEP, step_name.clone()),
                        (queue::headers::ATTEMPT, attempt.to_string()),
                    ],
                })
                .await;
            if let Err(e) = result {
                sqlx::query(
                    "UPDATE outbox SET publish_attempts = publish_attempts + 1, last_error = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(e.to_string())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Err(e.into());
            }
            sqlx::query(
                "UPDATE outbox SET published_at = now(), publish_attempts = publish_attempts + 1 WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            debug!(job_id, step = %step_name, attempt, correlation_id = %correlation_id, "step published");
            published += 1;
        }
        tx.commit().await?;
        Ok(published)
    }
}
