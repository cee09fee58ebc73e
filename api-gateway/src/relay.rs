//! The outbox relay: publishes committed step dispatches to RabbitMQ with
//! publisher confirms. Rows are taken with `FOR UPDATE SKIP LOCKED`, so any
//! number of gateway replicas relay without publishing a row twice; a crash
//! between the broker's confirm and the commit can publish a row again, which
//! the attempt-fenced claim absorbs.
//!
//! Each publish is a span in the trace of the transition that dispatched the
//! step, and carries that span's context to the worker in the message's
//! `traceparent` header. While connected, the relay also samples the depth
//! of every step queue for the metrics.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info, warn};

use failover_core::pipeline::StepName;
use failover_platform::queue::{
    self, ConfirmedPublisher, OutgoingMessage, QueueError, StepTopology,
};
use failover_platform::telemetry::propagation;

use crate::db::apply::OUTBOX_CHANNEL;
use crate::db::outbox::OutboxRow;
use crate::db::{self, StoreError};
use crate::metrics::GatewayMetrics;

/// Rows one publish round takes; their confirms are all in flight at once.
const BATCH: i64 = 200;

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Database(#[from] StoreError),
    #[error("database: {0}")]
    Listener(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Broker(#[from] QueueError),
}

#[derive(Debug, Clone)]
pub struct OutboxRelay {
    pool: PgPool,
    amqp_url: SecretString,
    topology: StepTopology,
    poll_interval: Duration,
    metrics: GatewayMetrics,
}

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
            metrics: GatewayMetrics::default(),
        }
    }

    /// Reports publishes, the connection and the queue depths to `metrics`.
    pub fn with_metrics(mut self, metrics: GatewayMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Relays until `shutdown`, reconnecting to the broker and the database
    /// with backoff whenever either goes away.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut delay = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            let mut connected = false;
            let result = self.session(&shutdown, &mut connected).await;
            self.metrics.set_relay_connected(false);
            if connected {
                // The session worked until now: this is a new outage, whose
                // backoff starts afresh.
                delay = Duration::from_millis(200);
            }
            match result {
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

    /// One connection to the broker and the database; sets `connected` once
    /// both answered.
    async fn session(
        &self,
        shutdown: &CancellationToken,
        connected: &mut bool,
    ) -> Result<(), RelayError> {
        let connection =
            queue::connect(self.amqp_url.expose_secret(), "failover-gateway-relay").await?;
        let publisher = ConfirmedPublisher::new(&connection).await?;
        self.topology
            .declare(publisher.channel(), &StepName::ALL)
            .await?;
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(OUTBOX_CHANNEL).await?;
        info!("outbox relay connected");
        *connected = true;
        self.metrics.set_relay_connected(true);
        let mut depths = QueueDepths::new(self.poll_interval);
        loop {
            let published = self.publish_due(&publisher).await?;
            depths
                .sample_if_due(&connection, &self.topology, &self.metrics)
                .await;
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

    /// Publishes the due rows of one batch, every confirm in flight at
    /// once; returns how many.
    async fn publish_due(&self, publisher: &ConfirmedPublisher) -> Result<usize, RelayError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let rows = db::outbox::take_due(&mut tx, BATCH).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let exchange = self.topology.exchange();
        let mut sent = Vec::with_capacity(rows.len());
        let mut failure = None;
        for row in &rows {
            let span = publish_span(&exchange, row);
            let message_id = format!("{}/{}/{}", row.job_id, row.step_name, row.attempt);
            let mut headers = vec![
                (
                    queue::headers::CORRELATION_ID,
                    row.correlation_id.to_string(),
                ),
                (queue::headers::JOB_ID, row.job_id.clone()),
                (queue::headers::STEP, row.step_name.clone()),
                (queue::headers::ATTEMPT, row.attempt.to_string()),
            ];
            headers.extend(propagation::headers(&span));
            let pending = publisher
                .send(OutgoingMessage {
                    exchange: &exchange,
                    routing_key: &row.routing_key,
                    payload: &row.payload,
                    message_id: &message_id,
                    headers,
                })
                .instrument(span.clone())
                .await;
            match pending {
                Ok(pending) => sent.push((row, span, pending)),
                Err(e) => {
                    span.in_scope(|| warn!(error = %e, "step publish failed"));
                    failure = Some(e);
                    break;
                }
            }
        }
        let mut published = Vec::with_capacity(sent.len());
        let mut refused = Vec::new();
        for (row, span, pending) in sent {
            match pending.confirmed().await {
                Ok(()) => {
                    self.metrics.published(&row.step_name);
                    span.in_scope(|| debug!("step published"));
                    published.push(row.id);
                }
                Err(e) => {
                    span.in_scope(|| warn!(error = %e, "step publish not confirmed"));
                    refused.push(row.id);
                    failure.get_or_insert(e);
                }
            }
        }
        db::outbox::mark_published(&mut tx, &published).await?;
        if let Some(e) = &failure {
            self.metrics.publish_failed();
            let unsent: Vec<i64> = rows
                .iter()
                .map(|r| r.id)
                .filter(|id| !published.contains(id))
                .collect();
            db::outbox::mark_failed(&mut tx, &unsent, &e.to_string()).await?;
            let _ = refused;
        }
        tx.commit().await.map_err(StoreError::from)?;
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(published.len()),
        }
    }
}

/// The producer span of one publish, in the trace of the transition that
/// dispatched the step.
fn publish_span(exchange: &str, row: &OutboxRow) -> tracing::Span {
    let span = tracing::info_span!(
        "outbox.publish",
        otel.name = %format!("publish {}", row.routing_key),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.destination.name = %exchange,
        messaging.rabbitmq.destination.routing_key = %row.routing_key,
        correlation_id = %row.correlation_id,
        job_id = %row.job_id,
        vm_id = row.vm_id.map(tracing::field::display),
        step = %row.step_name,
        attempt = row.attempt,
    );
    propagation::continue_stored(&span, row.traceparent.as_deref());
    span
}

/// Samples the ready messages of every step queue, at most once per
/// interval, on a channel of its own (a failed passive declare closes the
/// channel it ran on, never the publisher's).
struct QueueDepths {
    every: Duration,
    next: Instant,
    channel: Option<lapin::Channel>,
}

impl QueueDepths {
    fn new(every: Duration) -> Self {
        QueueDepths {
            every,
            next: Instant::now(),
            channel: None,
        }
    }

    async fn sample_if_due(
        &mut self,
        connection: &lapin::Connection,
        topology: &StepTopology,
        metrics: &GatewayMetrics,
    ) {
        if Instant::now() < self.next {
            return;
        }
        self.next = Instant::now() + self.every;
        if let Err(e) = self.sample(connection, topology, metrics).await {
            debug!(error = %e, "queue depth sample failed");
            self.channel = None;
        }
    }

    async fn sample(
        &mut self,
        connection: &lapin::Connection,
        topology: &StepTopology,
        metrics: &GatewayMetrics,
    ) -> Result<(), lapin::Error> {
        let channel = match &self.channel {
            Some(channel) if channel.status().connected() => channel.clone(),
            _ => {
                let channel = connection.create_channel().await?;
                self.channel = Some(channel.clone());
                channel
            }
        };
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        for step in StepName::ALL {
            let declared = channel
                .queue_declare(topology.queue(step).into(), passive, FieldTable::default())
                .await?;
            metrics.set_queue_depth(step.as_str(), declared.message_count());
        }
        Ok(())
    }
}
