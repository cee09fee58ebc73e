//! The outbox relay: publishes committed step dispatches to RabbitMQ with
//! publisher confirms, then marks them published.
//!
//! Two paths lead to the broker. The fast one: a decision that committed
//! dispatches hands the rows it wrote to its replica's relay at once
//! ([`Dispatches`]), which publishes them without reading them back. The
//! safety net: every poll interval the relay takes the due rows nobody
//! published — dispatches whose backoff ran out, and rows the fast path did
//! not get to (a replica that died after its commit, a broker that was
//! away) once they are [`FAST_PATH_GRACE`] old — with `FOR UPDATE SKIP
//! LOCKED`, so replicas never take a row twice at once. A row published
//! twice (a crash between the confirm and the mark, a slow fast path) is
//! absorbed by the attempt-fenced claim.
//!
//! Each publish is a span in the trace of the transition that dispatched the
//! step, and carries that span's context to the worker in the message's
//! `traceparent` header. While connected, the relay also samples the depth
//! of every step queue for the metrics.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info, warn};

use failover_core::pipeline::StepName;
use failover_platform::queue::{
    self, ConfirmedPublisher, OutgoingMessage, Pending, QueueError, StepTopology,
};
use failover_platform::telemetry::propagation;

use crate::db::outbox::OutboxRow;
use crate::db::{self, StoreError};
use crate::metrics::GatewayMetrics;

/// Rows one scan takes; their confirms are all in flight at once.
const BATCH: i64 = 200;
/// How old an undelayed row must be before the scan takes it from the fast path.
pub const FAST_PATH_GRACE: Duration = Duration::from_secs(5);
/// Dispatches waiting for the fast path; beyond, they wait for the scan.
const FAST_PATH_CAPACITY: usize = 10_000;

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Database(#[from] StoreError),
    #[error("broker: {0}")]
    Broker(#[from] QueueError),
    #[error("broker: a publish failed: {0}")]
    Publish(String),
}

/// The fast path's entrance: rows a decision just committed.
#[derive(Debug, Clone)]
pub struct Dispatches {
    sender: mpsc::Sender<Vec<OutboxRow>>,
}

impl Dispatches {
    /// Hands `rows` to the relay; when it cannot take them now, the scan
    /// publishes them later.
    pub fn hand_over(&self, rows: Vec<OutboxRow>) {
        if rows.is_empty() {
            return;
        }
        if self.sender.try_send(rows).is_err() {
            debug!("the relay's fast path is full or stopped; the outbox scan publishes these");
        }
    }
}

/// A fast path and its relay's end of it.
pub fn fast_path() -> (Dispatches, mpsc::Receiver<Vec<OutboxRow>>) {
    let (sender, receiver) = mpsc::channel(FAST_PATH_CAPACITY);
    (Dispatches { sender }, receiver)
}

#[derive(Debug, Clone)]
pub struct OutboxRelay {
    /// A pool of its own: its writes (published marks, failed attempts) are
    /// harmless to lose in a crash, and commit without waiting for the disk.
    pool: PgPool,
    amqp_url: SecretString,
    topology: StepTopology,
    poll_interval: Duration,
    metrics: GatewayMetrics,
    handed_over: Arc<Mutex<mpsc::Receiver<Vec<OutboxRow>>>>,
}

impl OutboxRelay {
    pub fn new(
        pool: PgPool,
        amqp_url: SecretString,
        topology: StepTopology,
        poll_interval: Duration,
        handed_over: mpsc::Receiver<Vec<OutboxRow>>,
    ) -> Self {
        OutboxRelay {
            pool,
            amqp_url,
            topology,
            poll_interval,
            metrics: GatewayMetrics::default(),
            handed_over: Arc::new(Mutex::new(handed_over)),
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

    /// One connection to the broker; sets `connected` once it answered.
    async fn session(
        &self,
        shutdown: &CancellationToken,
        connected: &mut bool,
    ) -> Result<(), RelayError> {
        let connection =
            queue::connect(self.amqp_url.expose_secret(), "failover-gateway-relay").await?;
        let fast = ConfirmedPublisher::new(&connection).await?;
        let scan = ConfirmedPublisher::new(&connection).await?;
        self.topology.declare(fast.channel(), &StepName::ALL).await?;
        info!("outbox relay connected");
        *connected = true;
        self.metrics.set_relay_connected(true);
        let mut settling = tokio::task::JoinSet::new();
        let mut depths = QueueDepths::new(self.poll_interval);
        let mut next_scan = Instant::now();
        let mut handed_over = self.handed_over.lock().await;
        let result = loop {
            depths
                .sample_if_due(&connection, &self.topology, &self.metrics)
                .await;
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                rows = handed_over.recv() => {
                    let Some(mut rows) = rows else { break Ok(()) };
                    while let Ok(more) = handed_over.try_recv() {
                        rows.extend(more);
                    }
                    // Sent now; their confirms are awaited beside the next
                    // sends, and the rows marked published then.
                    let sent = self.send(&fast, rows).await;
                    let failed = sent.failure.as_ref().map(|e| e.to_string());
                    let relay = self.clone();
                    settling.spawn(async move {
                        let settled = sent.settled(&relay.metrics).await;
                        let recorded = async {
                            let mut db = relay.pool.acquire().await.map_err(StoreError::from)?;
                            settled.record(&mut db).await
                        }
                        .await;
                        if let Err(e) = recorded {
                            warn!(error = %e, "cannot mark published steps; the scan publishes them again");
                        }
                    });
                    if let Some(e) = failed {
                        break Err(RelayError::Publish(e));
                    }
                }
                Some(_) = settling.join_next() => {}
                () = tokio::time::sleep_until(next_scan) => {
                    next_scan = Instant::now() + self.poll_interval;
                    loop {
                        match self.publish_due(&scan).await {
                            Ok(n) if n as i64 == BATCH => continue,
                            Ok(_) => break,
                            Err(e) => {
                                while settling.join_next().await.is_some() {}
                                return self.close(connection, Err(e)).await;
                            }
                        }
                    }
                }
            }
        };
        // What was sent is settled before the connection goes.
        while settling.join_next().await.is_some() {}
        self.close(connection, result).await
    }

    async fn close(
        &self,
        connection: lapin::Connection,
        result: Result<(), RelayError>,
    ) -> Result<(), RelayError> {
        let _ = connection.close(200, "shutdown".into()).await;
        result
    }

    /// Sends `rows`, each in its own span; stops at the first failure.
    async fn send(&self, publisher: &ConfirmedPublisher, rows: Vec<OutboxRow>) -> Sent {
        let exchange = self.topology.exchange();
        let mut sent = Sent {
            pending: Vec::with_capacity(rows.len()),
            unsent: Vec::new(),
            failure: None,
        };
        let mut rows = rows.into_iter();
        for row in rows.by_ref() {
            let span = publish_span(&exchange, &row);
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
                Ok(pending) => sent.pending.push((row, span, pending)),
                Err(e) => {
                    span.in_scope(|| warn!(error = %e, "step publish failed"));
                    sent.unsent.push(row.id);
                    sent.failure = Some(e);
                    break;
                }
            }
        }
        sent.unsent.extend(rows.map(|r| r.id));
        sent
    }

    /// Publishes the due rows nobody published, one batch with every
    /// confirm in flight at once; returns how many.
    async fn publish_due(&self, publisher: &ConfirmedPublisher) -> Result<usize, RelayError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let rows = db::outbox::take_due(&mut tx, BATCH, FAST_PATH_GRACE).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let count = rows.len();
        let sent = self.send(publisher, rows).await;
        // The rows stay locked until they are settled: no other replica
        // takes them meanwhile.
        let settled = sent.settled(&self.metrics).await;
        let failure = settled.record(&mut tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(count),
        }
    }
}

/// Messages sent, their confirms not in yet.
struct Sent {
    pending: Vec<(OutboxRow, tracing::Span, Pending)>,
    /// Rows not sent (after a failure), still due.
    unsent: Vec<i64>,
    failure: Option<QueueError>,
}

impl Sent {
    /// Waits for the broker's confirms.
    async fn settled(self, metrics: &GatewayMetrics) -> Settled {
        let mut settled = Settled {
            published: Vec::with_capacity(self.pending.len()),
            unconfirmed: self.unsent,
            failure: self.failure,
        };
        for (row, span, pending) in self.pending {
            match pending.confirmed().await {
                Ok(()) => {
                    metrics.published(&row.step_name);
                    span.in_scope(|| debug!("step published"));
                    settled.published.push(row.id);
                }
                Err(e) => {
                    span.in_scope(|| warn!(error = %e, "step publish not confirmed"));
                    settled.unconfirmed.push(row.id);
                    settled.failure.get_or_insert(e);
                }
            }
        }
        if settled.failure.is_some() {
            metrics.publish_failed();
        }
        settled
    }
}

/// What the broker confirmed.
struct Settled {
    published: Vec<i64>,
    /// Rows not sent or not confirmed: they stay due.
    unconfirmed: Vec<i64>,
    failure: Option<QueueError>,
}

impl Settled {
    /// Marks the published rows, counts a failed attempt on the others;
    /// returns the failure, if any.
    async fn record(self, db: &mut sqlx::PgConnection) -> Result<Option<QueueError>, StoreError> {
        db::outbox::mark_published(&mut *db, &self.published).await?;
        if let Some(e) = &self.failure {
            db::outbox::mark_failed(&mut *db, &self.unconfirmed, &e.to_string()).await?;
        }
        Ok(self.failure)
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
