//! One broker session: consume the subscribed step queues and handle each
//! delivery (decode → claim → ack → execute with heartbeats → report).
//! Poison messages go to the dead-letter queue with their reason; a message
//! is acked only after its claim was granted, never held for a long step.
//!
//! A worker runs at most `worker.concurrency` steps at once, and of them at
//! most `worker.virtio_concurrency` virt-customize runs. A delivery is taken
//! when a slot is free; the broker's prefetch (a few deliveries for the
//! channel) keeps the next ones at hand, so a slot that frees is filled at
//! once. When every slot stays taken for
//! `worker.capacity_wait` (long steps), the worker hands back what it holds
//! of that class and stops consuming it until one of its steps ends, so
//! that other workers take the work.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use futures::future::{Fuse, FusedFuture as _, FutureExt as _};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use prost::Message as _;
use secrecy::ExposeSecret;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, warn};

use failover_core::pipeline::StepName;
use failover_platform::queue::{self, ConfirmedPublisher, OutgoingMessage, StepTopology};
use failover_platform::telemetry::propagation;
use failover_proto::v1 as pb;

use super::Shared;
use super::coordination::{ClaimOutcome, StepAttempt};
use crate::steps::{StepContext, StepResult};

/// The most deliveries a class keeps at hand beyond the ones it runs.
const PREFETCH_MAX: u16 = 8;

/// Steps with a capacity of their own.
struct Class {
    name: &'static str,
    steps: Vec<StepName>,
    /// A step of the class holds one permit of each.
    slots: Vec<Arc<Semaphore>>,
}

impl Class {
    /// A permit of every semaphore of the class, if all are free now.
    fn try_acquire(&self) -> Option<Vec<OwnedSemaphorePermit>> {
        self.slots
            .iter()
            .map(|s| s.clone().try_acquire_owned().ok())
            .collect()
    }

    /// A permit of every semaphore of the class, in order.
    async fn acquire(&self) -> anyhow::Result<Vec<OwnedSemaphorePermit>> {
        let mut permits = Vec::with_capacity(self.slots.len());
        for slots in &self.slots {
            permits.push(
                slots
                    .clone()
                    .acquire_owned()
                    .await
                    .context("the worker's slots are closed")?,
            );
        }
        Ok(permits)
    }
}

fn classes(shared: &Shared, steps: &[StepName]) -> Vec<Class> {
    let (virtio, waits): (Vec<StepName>, Vec<StepName>) = steps
        .iter()
        .partition(|s| **s == StepName::VirtioInjection);
    [
        Class {
            name: "waits",
            steps: waits,
            slots: vec![shared.slots.all.clone()],
        },
        // A virt-customize run counts against the worker's concurrency too.
        Class {
            name: "virtio",
            steps: virtio,
            slots: vec![shared.slots.virtio.clone(), shared.slots.all.clone()],
        },
    ]
    .into_iter()
    .filter(|c| !c.steps.is_empty())
    .collect()
}

/// One broker session, until `shutdown` or an error; sets `connected` once
/// it consumes.
pub(super) async fn session(
    shared: &Arc<Shared>,
    steps: &[StepName],
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    connected: &mut bool,
) -> anyhow::Result<()> {
    let settings = &shared.settings;
    let connection = queue::connect(
        settings.amqp.url.expose_secret(),
        &format!("failover-worker-{}", shared.coordinator.worker_id()),
    )
    .await
    .context("connecting to the broker")?;
    let topology = StepTopology::new(&settings.amqp);
    let dead_letters = ConfirmedPublisher::new(&connection).await?;
    topology.declare(dead_letters.channel(), steps).await?;
    let dead_letters = Arc::new((dead_letters, topology));
    let channel = connection.create_channel().await?;
    // Deliveries unacked at once, all queues together: waiting for a slot
    // or being claimed.
    channel
        .basic_qos(
            settings.worker.concurrency.clamp(1, PREFETCH_MAX),
            BasicQosOptions { global: true },
        )
        .await?;
    let mut consumers = Vec::new();
    for class in classes(shared, steps) {
        let deliveries = subscribe(&channel, &dead_letters.1, &class, shared).await?;
        consumers.push((class, channel.clone(), deliveries));
    }
    info!("consuming step queues");
    *connected = true;
    shared.metrics.set_broker_connected(true);
    let result = futures::future::try_join_all(consumers.into_iter().map(
        |(class, channel, deliveries)| {
            consume(
                shared,
                class,
                channel,
                deliveries,
                &dead_letters,
                tracker,
                shutdown,
            )
        },
    ))
    .await;
    // Unacked deliveries not yet claimed go back to the queue.
    let _ = connection.close(200, "worker stopping".into()).await;
    result.map(|_| ())
}

/// Takes the deliveries of one class while it has free slots, until
/// `shutdown` or an error.
async fn consume(
    shared: &Arc<Shared>,
    class: Class,
    channel: lapin::Channel,
    mut deliveries: Deliveries,
    dead_letters: &Arc<(ConfirmedPublisher, StepTopology)>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let capacity_wait = shared.settings.worker.capacity_wait;
    loop {
        let delivery = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            next = deliveries.next() => match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(e).context("consuming"),
                None => anyhow::bail!("the broker closed the consumers"),
            },
        };
        let slot = match class.try_acquire() {
            Some(slot) => slot,
            None => {
                let waited = tokio::select! {
                    () = shutdown.cancelled() => {
                        requeue(&delivery).await;
                        return Ok(());
                    }
                    slot = tokio::time::timeout(capacity_wait, class.acquire()) => slot,
                };
                match waited {
                    Ok(slot) => slot?,
                    Err(_) => {
                        // Every slot stays taken: hand this delivery and the
                        // ones behind it back for other workers, and consume
                        // again when a step of this class ends.
                        requeue(&delivery).await;
                        unsubscribe(&channel, deliveries, &class, shared).await?;
                        info!(class = class.name, "at capacity; consuming again when a step ends");
                        tokio::select! {
                            () = shutdown.cancelled() => return Ok(()),
                            permit = class.acquire() => drop(permit?),
                        }
                        deliveries = subscribe(&channel, &dead_letters.1, &class, shared).await?;
                        continue;
                    }
                }
            }
        };
        let shared = shared.clone();
        let dead_letters = dead_letters.clone();
        tracker.spawn(async move {
            handle(delivery, &shared, &dead_letters.0, &dead_letters.1).await;
            drop(slot);
        });
    }
}

type Deliveries = futures::stream::SelectAll<lapin::Consumer>;

fn tags(class: &Class, shared: &Shared) -> Vec<String> {
    class
        .steps
        .iter()
        .map(|step| format!("{}-{}", shared.coordinator.worker_id(), step))
        .collect()
}

/// Consumes the queues of `class`, one consumer tag each.
async fn subscribe(
    channel: &lapin::Channel,
    topology: &StepTopology,
    class: &Class,
    shared: &Shared,
) -> anyhow::Result<Deliveries> {
    let mut consumers = Vec::new();
    for (step, tag) in class.steps.iter().zip(tags(class, shared)) {
        let consumer = channel
            .basic_consume(
                topology.queue(*step).into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        consumers.push(consumer);
    }
    Ok(futures::stream::select_all(consumers))
}

/// Cancels the consumers of `class`; what the broker delivered before the
/// cancel went through goes back to the queue.
async fn unsubscribe(
    channel: &lapin::Channel,
    mut deliveries: Deliveries,
    class: &Class,
    shared: &Shared,
) -> anyhow::Result<()> {
    for tag in tags(class, shared) {
        channel
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await?;
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(next) = deliveries.next().await {
            if let Ok(delivery) = next {
                requeue(&delivery).await;
            }
        }
    })
    .await
    .context("the consumers did not end after their cancel")
}

async fn requeue(delivery: &Delivery) {
    let _ = delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await;
}

async fn handle(
    delivery: Delivery,
    shared: &Shared,
    dead_letters: &ConfirmedPublisher,
    topology: &StepTopology,
) {
    let task = match pb::StepTask::decode(delivery.data.as_slice()) {
        Ok(task) => task,
        Err(e) => {
            return dead_letter(
                &delivery,
                dead_letters,
                topology,
                &format!("undecodable step task: {e}"),
            )
            .await;
        }
    };
    let Some(step) = StepName::parse(&task.step_name) else {
        let reason = format!("unknown step {:?}", task.step_name);
        return dead_letter(&delivery, dead_letters, topology, &reason).await;
    };
    let vm_id = task
        .vm
        .as_ref()
        .map(|vm| vm.vm_id.clone())
        .unwrap_or_default();
    // The step's consumer span, in the trace the publisher's traceparent
    // header names: the job's trace.
    let span = tracing::info_span!(
        "step",
        otel.name = %format!("step {step}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.destination.name = %delivery.exchange,
        messaging.rabbitmq.destination.routing_key = %delivery.routing_key,
        correlation_id = %task.correlation_id,
        job_id = %task.job_id,
        vm_id = %vm_id,
        step = %step,
        attempt = task.attempt,
        worker_id = %shared.coordinator.worker_id(),
        outcome = tracing::field::Empty,
    );
    propagation::continue_trace(&span, |name| queue::header(&delivery.properties, name));
    async move {
        let attempt = StepAttempt {
            correlation_id: task.correlation_id.clone(),
            job_id: task.job_id.clone(),
            vm_id,
            step_name: task.step_name.clone(),
            attempt: task.attempt,
        };
        // The lease runs from the claim at the latest: from before it, here.
        let asked = tokio::time::Instant::now();
        let claim = shared.coordinator.claim(&attempt).await;
        let claim_outcome = match &claim {
            Ok(ClaimOutcome::Granted { .. }) => "granted",
            Ok(ClaimOutcome::Refused { .. }) => "refused",
            Ok(ClaimOutcome::UnknownJob { .. }) => "unknown_job",
            Err(_) => "error",
        };
        shared.metrics.claim(step.as_str(), claim_outcome);
        match claim {
            Ok(ClaimOutcome::Granted { lease }) => {
                if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                    warn!(error = %e, "ack after claim failed; the broker will redeliver and the claim refuse it");
                }
                execute(shared, task, step, attempt, asked + lease, lease).await;
            }
            Ok(ClaimOutcome::Refused { reason }) => {
                info!(%reason, "claim refused; dropping the delivery");
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
            Ok(ClaimOutcome::UnknownJob { reason }) => {
                dead_letter(&delivery, dead_letters, topology, &reason).await;
            }
            Err(e) => {
                warn!(error = %e, "claim failed; handing the message back");
                tokio::time::sleep(Duration::from_secs(2)).await;
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
            }
        }
    }
    .instrument(span)
    .await;
}

/// Publishes the message to the dead-letter exchange with its reason, then
/// acks the original: it never loops back into the queue.
async fn dead_letter(
    delivery: &Delivery,
    publisher: &ConfirmedPublisher,
    topology: &StepTopology,
    reason: &str,
) {
    warn!(%reason, routing_key = %delivery.routing_key, "dead-lettering a step message");
    let mut headers = vec![(queue::headers::DEAD_LETTER_REASON, reason.to_owned())];
    for name in [
        queue::headers::CORRELATION_ID,
        queue::headers::JOB_ID,
        queue::headers::STEP,
        queue::headers::ATTEMPT,
        queue::headers::TRACEPARENT,
    ] {
        if let Some(value) = queue::header(&delivery.properties, name) {
            headers.push((name, value));
        }
    }
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    let exchange = topology.dead_letter_exchange();
    let published = publisher
        .publish(OutgoingMessage {
            exchange: &exchange,
            routing_key: delivery.routing_key.as_str(),
            payload: &delivery.data,
            message_id: &message_id,
            headers,
        })
        .await;
    match published {
        Ok(()) => {
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
        Err(e) => {
            // Rejecting without requeue routes it through the queue's
            // dead-letter exchange, without the reason header.
            warn!(error = %e, "dead-letter publish failed; rejecting instead");
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: false,
                    ..Default::default()
                })
                .await;
        }
    }
}

/// Executes a claimed step with heartbeats, and reports its outcome.
async fn execute(
    shared: &Shared,
    task: pb::StepTask,
    step: StepName,
    attempt: StepAttempt,
    lease_until: tokio::time::Instant,
    lease: Duration,
) {
    let cancel = shared.abort.child_token();
    let ctx = StepContext::new(task, step, cancel.clone());
    let heartbeat_every = shared.settings.worker.heartbeat_interval;
    let started = tokio::time::Instant::now();
    let _in_flight = shared.metrics.step_started();
    info!("step started");
    let run = shared.executors.execute(&ctx);
    tokio::pin!(run);
    let mut ticker = tokio::time::interval_at(started + heartbeat_every, heartbeat_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A heartbeat runs beside the step, never instead of it: a gateway slow
    // to answer does not pause the work.
    let heartbeat = |percent: u32, message: String| {
        let (coordinator, attempt) = (&shared.coordinator, &attempt);
        async move { coordinator.heartbeat(attempt, percent, &message).await }
    };
    let beat = Fuse::terminated();
    tokio::pin!(beat);
    let mut beat_sent = started;
    // Past its lease, as far as this worker knows, the step may run again
    // elsewhere: a worker that could not renew it stops, rather than run
    // beside the next attempt.
    let expiry = tokio::time::sleep_until(lease_until);
    tokio::pin!(expiry);
    let finished = loop {
        tokio::select! {
            result = &mut run => break Ok(result),
            () = &mut expiry => break Err("the gateway did not renew the lease in time"),
            _ = ticker.tick(), if beat.is_terminated() => {
                let (percent, message) = ctx.progress.latest();
                beat_sent = tokio::time::Instant::now();
                beat.set(heartbeat(percent, message).fuse());
            }
            outcome = &mut beat, if !beat.is_terminated() => {
                match outcome {
                    Ok(answer) if !answer.lease_held => {
                        break Err("the gateway gave the step to another attempt");
                    }
                    Ok(answer) if answer.cancel_requested => {
                        expiry.as_mut().reset(beat_sent + lease);
                        cancel.cancel();
                    }
                    Ok(_) => expiry.as_mut().reset(beat_sent + lease),
                    Err(e) => warn!(error = %e, "heartbeat failed"),
                }
            }
        }
    };
    let result = match finished {
        Ok(result) => result,
        Err(reason) => {
            warn!(reason, "lease lost; stopping the step without reporting");
            cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(30), &mut run).await;
            shared
                .metrics
                .step_finished(step.as_str(), "lease_lost", started.elapsed());
            tracing::Span::current().record("outcome", "lease_lost");
            return;
        }
    };
    let result = if shared.abort.is_cancelled() && !matches!(result, StepResult::Succeeded { .. }) {
        StepResult::Failed {
            code: step.error_code(),
            message: "the worker stopped before the step finished; it runs again".into(),
            retryable: true,
        }
    } else {
        result
    };
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        outcome = result.kind(),
        "step finished"
    );
    shared
        .metrics
        .step_finished(step.as_str(), result.kind(), started.elapsed());
    let span = tracing::Span::current();
    span.record("outcome", result.kind());
    if matches!(result, StepResult::Failed { .. }) {
        span.record("otel.status_code", "ERROR");
    }
    shared
        .coordinator
        .report(&attempt, &result, ctx.log.text(), lease)
        .await;
}
