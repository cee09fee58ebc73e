//! The failover service: thin over the rules. Every operation loads what
//! its decision needs in one read, asks `failover_core` for the decision,
//! and writes the decision's effects with [`crate::db::apply`] in the same
//! transaction; the metrics move after the commit. Split by concern:
//! [`admission`] (starting failovers and cleanups, the auto-cleanup timer),
//! [`coordination`] (the worker protocol and the lease timer), [`operator`]
//! (cancel and retry), [`queries`] (what the API reads).

pub mod admission;
pub mod coordination;
mod error;
pub mod operator;
pub mod queries;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tracing::{Instrument as _, info};
use uuid::Uuid;

use failover_core::effects::Effects;
use failover_core::holds;
use failover_core::job::Placement;
use failover_core::lifecycle::{self, EventFacts};
use failover_core::orchestration::{Event, RetryPolicy};
use failover_core::pipeline::StepName;
use failover_core::rules::{Refusal, Rules};
use failover_platform::Settings;
use failover_platform::telemetry::propagation;

pub use error::ServiceError;

use crate::db::apply::Traces;
use crate::db::idempotency::{IdempotencyKey, Remembered};
use crate::db::{self, StoreError, jobs::Locked};
use crate::metrics::GatewayMetrics;

#[derive(Debug, Clone)]
pub struct FailoverService {
    pool: PgPool,
    rules: Arc<Rules>,
    metrics: GatewayMetrics,
}

/// What a step event or an operator's command came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<T> {
    Accepted(T),
    /// The rules refused it; nothing changed.
    Refused(Refusal),
    /// The job does not exist.
    UnknownJob,
    /// An earlier request with the same idempotency key did it.
    Replayed(Remembered),
}

/// What an event is, for its span and its log line.
#[derive(Debug, Clone, Copy)]
struct EventLabel {
    name: &'static str,
    step: Option<StepName>,
    attempt: u32,
}

/// The rules, configured.
pub fn rules(settings: &Settings) -> Rules {
    let failover = &settings.failover;
    Rules {
        retry: RetryPolicy {
            max_attempts: settings.gateway.step_max_attempts,
            initial_backoff: settings.gateway.step_retry_initial_backoff,
            max_backoff: settings.gateway.step_retry_max_backoff,
        },
        lease: settings.gateway.lease_duration,
        default_test_duration: settings.gateway.default_test_duration,
        max_operations_per_vm: settings.gateway.max_operations_per_vm,
        placement: Placement {
            zone_id: failover.zone_id.clone(),
            template_id: failover.template_id.clone(),
            appliance_vm_id: failover.appliance_vm_id.clone(),
        },
        default_test_network_id: failover.default_test_network_id.clone(),
        default_live_network_id: failover.default_live_network_id.clone(),
    }
}

/// How often a transaction that conflicted with another runs again.
const CONFLICT_RETRIES: u32 = 5;

impl FailoverService {
    pub fn new(pool: PgPool, rules: Rules, metrics: GatewayMetrics) -> Self {
        FailoverService {
            pool,
            rules: Arc::new(rules),
            metrics,
        }
    }

    pub fn lease_duration(&self) -> Duration {
        self.rules.lease
    }

    /// Runs `attempt` again when its transaction conflicted with another
    /// (a deadlock or serialization failure rolls it back whole).
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, ServiceError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let mut tries = 0;
        loop {
            match attempt().await {
                Err(ServiceError::Store(e)) if e.is_conflict() && tries < CONFLICT_RETRIES => {
                    tries += 1;
                    tracing::debug!(error = %e, tries, "transaction conflicted; running it again");
                }
                other => return other,
            }
        }
    }

    /// Applies a decision about a job: locks and reads it, asks `decide`,
    /// adds the start of the job waiting for a VM this releases, writes it
    /// all and commits. One transaction; one span in the job's trace.
    ///
    /// With an idempotency key, the key is recorded in the same transaction
    /// when the decision writes anything (`key_outcome` says what it did).
    async fn on_job<T, D>(
        &self,
        job_id: &str,
        label: EventLabel,
        idempotency: Option<(&IdempotencyKey, Uuid)>,
        decide: D,
    ) -> Result<Verdict<T>, ServiceError>
    where
        D: Fn(&Locked) -> Result<(Effects, T), Refusal>,
    {
        let event = label.name;
        self.retrying(|| async {
            let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
            let Some(locked) = db::jobs::lock(&mut tx, job_id).await? else {
                return Ok(Verdict::UnknownJob);
            };
            let job = &locked.record;
            let span = tracing::info_span!(
                "job.transition",
                otel.name = %format!("transition {event}"),
                correlation_id = %job.correlation_id,
                job_id,
                vm_id = %job.vm_id,
                job_type = %job.job_type,
                event,
                step = label.step.map(StepName::as_str),
                attempt = label.attempt,
                job_status = tracing::field::Empty,
                refusal = tracing::field::Empty,
            );
            propagation::join_trace(&span, locked.traceparent.as_deref());
            async {
                let (mut effects, answer) = match decide(&locked) {
                    Ok(decided) => decided,
                    Err(refusal) => {
                        tracing::Span::current().record("refusal", refusal.to_string());
                        return Ok(Verdict::Refused(refusal));
                    }
                };
                let status = effects.jobs.first().map(|j| j.status);
                if let Some(status) = status {
                    tracing::Span::current().record("job_status", status.as_str());
                }
                if let (Some((key, correlation_id)), Some(status)) = (idempotency, status)
                    && !db::idempotency::record(
                        &mut tx,
                        key,
                        job_id,
                        202,
                        Some(status.as_str()),
                        Some(correlation_id),
                    )
                    .await?
                {
                    drop(tx);
                    return match db::idempotency::find(&self.pool, &key.key, &key.endpoint).await? {
                        Some(remembered) => Ok(Verdict::Replayed(remembered)),
                        None => Err(StoreError::Vanished.into()),
                    };
                }
                let mut traces = Traces::of(
                    propagation::traceparent(&tracing::Span::current())
                        .or_else(|| locked.traceparent.clone()),
                );
                self.start_released(&mut tx, &mut effects, &mut traces)
                    .await?;
                if effects.is_empty() {
                    return Ok(Verdict::Accepted(answer));
                }
                db::apply::apply(&mut tx, &effects, &traces).await?;
                tx.commit().await.map_err(StoreError::from)?;
                info!(
                    job_id,
                    correlation_id = %job.correlation_id,
                    event,
                    step = label.step.map(StepName::as_str),
                    attempt = label.attempt,
                    job_status = status.map(|s| s.as_str()),
                    "job event applied"
                );
                self.counted(&effects);
                Ok(Verdict::Accepted(answer))
            }
            .instrument(span)
            .await
        })
        .await
    }

    /// When `effects` release a VM, adds the start of the oldest job waiting
    /// for it (under the VM's lock, so that no admission slips in between).
    async fn start_released(
        &self,
        tx: &mut PgConnection,
        effects: &mut Effects,
        traces: &mut Traces,
    ) -> Result<(), ServiceError> {
        let Some(vm_id) = effects.released_vm.take() else {
            return Ok(());
        };
        db::jobs::lock_vm(tx, vm_id).await?;
        let holders = db::jobs::holders(tx, vm_id).await?;
        let Some(next) = holds::next_to_start(&holders, effects) else {
            return Ok(());
        };
        let Some(waiting) = db::jobs::lock(tx, &next).await? else {
            return Ok(());
        };
        match lifecycle::apply(
            &waiting.record,
            &Event::Start,
            EventFacts::default(),
            &self.rules,
            waiting.now,
        ) {
            Ok(started) => {
                let span = tracing::info_span!(
                    "job.transition",
                    otel.name = "transition start",
                    correlation_id = %waiting.record.correlation_id,
                    job_id = %next,
                    vm_id = %vm_id,
                    job_type = %waiting.record.job_type,
                    event = "start",
                );
                propagation::join_trace(&span, waiting.traceparent.as_deref());
                span.in_scope(|| info!(job_id = %next, vm_id = %vm_id, "the VM is free; starting the job that waited for it"));
                traces.jobs.push((
                    next.clone(),
                    propagation::traceparent(&span).or(waiting.traceparent.clone()),
                ));
                effects.extend(started);
            }
            Err(refusal) => tracing::warn!(job_id = %next, %refusal, "waiting job could not start"),
        }
        Ok(())
    }

    /// Counts what committed.
    fn counted(&self, effects: &Effects) {
        for event in &effects.metrics {
            self.metrics.count(event);
        }
    }
}
