//! Decisions about existing jobs, taken together: the claims, reports,
//! expired leases and operator commands that arrive while a transaction is
//! running are answered by the next one. A batch locks its jobs in one
//! statement (in the order of their ids, as every writer locks them), asks
//! the rules about each command in arrival order, adds the start of the
//! jobs waiting for a VM the batch releases, writes every effect in one
//! statement and commits once. Alone, a command is a batch of one; under
//! load, the round trips and the commit are shared.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::{info, warn};
use uuid::Uuid;

use failover_core::coordination::{self, Report, StepOutcome};
use failover_core::effects::Effects;
use failover_core::holds;
use failover_core::lifecycle::{self, EventFacts};
use failover_core::operator::{self, Outcome};
use failover_core::orchestration::Event;
use failover_core::pipeline::StepName;
use failover_core::rules::{Refusal, Rules};
use failover_platform::telemetry::propagation;

use super::lanes::Lanes;
use super::operator::OperatorOutcome;
use super::{ServiceError, Verdict};
use crate::db::apply::Traces;
use crate::db::idempotency::IdempotencyKey;
use crate::db::jobs::Locked;
use crate::db::{self, StoreError};
use crate::metrics::GatewayMetrics;
use crate::relay::Dispatches;

/// The most commands one transaction answers.
const MAX_BATCH: usize = 64;
/// Transactions at once: one collects the next batch while another runs.
const LANES: usize = 4;
/// How often a batch that conflicted with another transaction runs again.
const CONFLICT_RETRIES: u32 = 5;

/// A command about an existing job.
#[derive(Debug, Clone)]
pub enum Command {
    Claim {
        step: StepName,
        attempt: u32,
        worker_id: String,
    },
    Report(Report),
    ExpireLease {
        step: StepName,
        attempt: u32,
    },
    Operate {
        command: operator::Command,
        correlation_id: Uuid,
        idempotency: Option<IdempotencyKey>,
    },
}

impl Command {
    /// The event's name, for its span and its log line.
    fn event(&self) -> &'static str {
        match self {
            Command::Claim { .. } => "claimed",
            Command::Report(r) => match r.outcome {
                StepOutcome::Succeeded { .. } => "succeeded",
                StepOutcome::Failed(_) => "failed",
                StepOutcome::Skipped { .. } => "skipped",
            },
            Command::ExpireLease { .. } => "lease-expired",
            Command::Operate {
                command: operator::Command::Cancel,
                ..
            } => "cancel-requested",
            Command::Operate {
                command: operator::Command::Retry,
                ..
            } => "retry-requested",
        }
    }

    fn step(&self) -> Option<(StepName, u32)> {
        match self {
            Command::Claim { step, attempt, .. } | Command::ExpireLease { step, attempt } => {
                Some((*step, *attempt))
            }
            Command::Report(r) => Some((r.step, r.attempt)),
            Command::Operate { .. } => None,
        }
    }
}

/// What a command came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Done,
    Operator(OperatorOutcome),
}

type Reply = oneshot::Sender<Result<Verdict<Answer>, ServiceError>>;

struct Request {
    job_id: String,
    command: Command,
    /// The caller's span: the transition's span is its child.
    span: tracing::Span,
    reply: Reply,
}

/// Hands commands to the lanes that decide them in batches.
#[derive(Debug, Clone)]
pub struct Batcher {
    lanes: Lanes<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("job_id", &self.job_id)
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

/// What a lane works with.
#[derive(Debug, Clone)]
struct Lane {
    pool: sqlx::PgPool,
    rules: Arc<Rules>,
    metrics: GatewayMetrics,
    dispatches: Dispatches,
}

impl Batcher {
    /// Starts the lanes; they end when every [`Batcher`] is dropped.
    pub fn start(
        pool: sqlx::PgPool,
        rules: Arc<Rules>,
        metrics: GatewayMetrics,
        dispatches: Dispatches,
    ) -> Self {
        let lane = Lane {
            pool,
            rules,
            metrics,
            dispatches,
        };
        let lanes = Lanes::start(LANES, MAX_BATCH, move |batch| {
            let lane = lane.clone();
            async move { lane.answer(batch).await }
        });
        Batcher { lanes }
    }

    /// Decides `command` about `job_id` in the next batch.
    pub async fn submit(
        &self,
        job_id: &str,
        command: Command,
    ) -> Result<Verdict<Answer>, ServiceError> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            job_id: job_id.to_owned(),
            command,
            span: tracing::Span::current(),
            reply,
        };
        if self.lanes.send(request).is_err() {
            return Err(StoreError::Unavailable(sqlx::Error::PoolClosed).into());
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable(sqlx::Error::PoolClosed).into()))
    }
}

/// One command of a batch, decided.
struct Decided {
    verdict: Verdict<Answer>,
    span: tracing::Span,
    status: Option<&'static str>,
}

impl Lane {
    async fn answer(&self, batch: Vec<Request>) {
        let mut tries = 0;
        let result = loop {
            match self.decide_and_write(&batch).await {
                Err(ServiceError::Store(e)) if e.is_conflict() && tries < CONFLICT_RETRIES => {
                    tries += 1;
                    tracing::debug!(error = %e, tries, size = batch.len(), "batch conflicted; running it again");
                }
                other => break other,
            }
        };
        match result {
            Ok((decided, effects)) => {
                for event in &effects.metrics {
                    self.metrics.count(event);
                }
                for (request, decided) in batch.into_iter().zip(decided) {
                    if let Verdict::Accepted(_) = &decided.verdict {
                        decided.span.in_scope(|| {
                            let step = request.command.step();
                            info!(
                                job_id = %request.job_id,
                                event = request.command.event(),
                                step = step.map(|s| s.0.as_str()),
                                attempt = step.map(|s| s.1),
                                job_status = decided.status,
                                "job event applied"
                            )
                        });
                    }
                    let _ = request.reply.send(Ok(decided.verdict));
                }
            }
            Err(e) => {
                warn!(error = %e, size = batch.len(), "a batch of job events failed");
                for request in batch {
                    let _ = request.reply.send(Err(e.again()));
                }
            }
        }
    }

    /// One transaction for the whole batch.
    async fn decide_and_write(
        &self,
        batch: &[Request],
    ) -> Result<(Vec<Decided>, Effects), ServiceError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let mut ids: Vec<String> = batch.iter().map(|r| r.job_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let mut jobs: HashMap<String, Locked> = db::jobs::lock_many(&mut tx, &ids)
            .await?
            .into_iter()
            .map(|l| (l.record.job_id.clone(), l))
            .collect();
        let mut effects = Effects::default();
        let mut traces = Traces::default();
        let mut decided = Vec::with_capacity(batch.len());
        for request in batch {
            let Some(locked) = jobs.get_mut(&request.job_id) else {
                decided.push(Decided {
                    verdict: Verdict::UnknownJob,
                    span: request.span.clone(),
                    status: None,
                });
                continue;
            };
            let span = request.span.in_scope(|| transition_span(locked, &request.command));
            let outcome = span.in_scope(|| decide(locked, &request.command, &self.rules));
            let (decision, answer) = match outcome {
                Ok(decision) => decision,
                Err(refusal) => {
                    span.record("refusal", refusal.to_string());
                    decided.push(Decided {
                        verdict: Verdict::Refused(refusal),
                        span,
                        status: None,
                    });
                    continue;
                }
            };
            let status = decision.job(&request.job_id).map(|j| j.status);
            if let Some(status) = status {
                span.record("job_status", status.as_str());
            }
            if let (
                Command::Operate {
                    idempotency: Some(key),
                    correlation_id,
                    ..
                },
                Some(status),
            ) = (&request.command, status)
                && !decision.is_empty()
                && !db::idempotency::record(
                    &mut tx,
                    key,
                    &request.job_id,
                    202,
                    Some(status.as_str()),
                    Some(*correlation_id),
                )
                .await?
            {
                // An earlier request with the same key did it.
                let remembered = db::idempotency::find_in(&mut tx, &key.key, &key.endpoint)
                    .await?
                    .ok_or(StoreError::Vanished)?;
                decided.push(Decided {
                    verdict: Verdict::Replayed(remembered),
                    span,
                    status: None,
                });
                continue;
            }
            // A later command of the batch about this job sees it as now.
            if let Some(record) = decision.job(&request.job_id) {
                locked.record = record.clone();
            }
            traces.jobs.push((
                request.job_id.clone(),
                propagation::traceparent(&span).or_else(|| locked.traceparent.clone()),
            ));
            effects.extend(decision);
            decided.push(Decided {
                verdict: Verdict::Accepted(answer),
                span,
                status: status.map(|s| s.as_str()),
            });
        }
        let now = jobs.values().map(|l| l.now).max();
        if let Some(now) = now {
            self.start_released(&mut tx, &mut effects, &mut traces, &jobs, now)
                .await?;
        }
        if !effects.is_empty() {
            let due = db::apply::apply(&mut tx, &effects, &traces).await?;
            tx.commit().await.map_err(StoreError::from)?;
            self.dispatches.hand_over(due);
        }
        Ok((decided, effects))
    }

    /// Adds the start of the oldest job waiting for each VM the batch
    /// releases (under the VM's lock, so that no admission slips in between).
    async fn start_released(
        &self,
        tx: &mut sqlx::PgConnection,
        effects: &mut Effects,
        traces: &mut Traces,
        locked: &HashMap<String, Locked>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ServiceError> {
        let released = std::mem::take(&mut effects.released_vms);
        for vm_id in released {
            db::jobs::lock_vm(tx, vm_id).await?;
            let holders = db::jobs::holders(tx, vm_id).await?;
            let Some(next) = holds::next_to_start(&holders, effects) else {
                continue;
            };
            let waiting = match effects.job(&next).cloned() {
                Some(record) => Locked {
                    record,
                    traceparent: locked.get(&next).and_then(|l| l.traceparent.clone()),
                    now,
                },
                None => match db::jobs::lock(tx, &next).await? {
                    Some(waiting) => waiting,
                    None => continue,
                },
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
                Err(refusal) => {
                    warn!(job_id = %next, %refusal, "waiting job could not start")
                }
            }
        }
        Ok(())
    }
}

/// The span of one transition, in the job's trace whoever caused it.
fn transition_span(locked: &Locked, command: &Command) -> tracing::Span {
    let job = &locked.record;
    let event = command.event();
    let step = command.step();
    let span = tracing::info_span!(
        "job.transition",
        otel.name = %format!("transition {event}"),
        correlation_id = %job.correlation_id,
        job_id = %job.job_id,
        vm_id = %job.vm_id,
        job_type = %job.job_type,
        event,
        step = step.map(|s| s.0.as_str()),
        attempt = step.map(|s| s.1),
        job_status = tracing::field::Empty,
        refusal = tracing::field::Empty,
    );
    propagation::join_trace(&span, locked.traceparent.as_deref());
    span
}

/// What the rules answer to `command` about `locked`.
fn decide(locked: &Locked, command: &Command, rules: &Rules) -> Result<(Effects, Answer), Refusal> {
    let job = &locked.record;
    let now = locked.now;
    match command {
        Command::Claim {
            step,
            attempt,
            worker_id,
        } => coordination::claim(job, *step, *attempt, worker_id, rules, now)
            .map(|e| (e, Answer::Done)),
        Command::Report(report) => {
            coordination::report(job, report.clone(), rules, now).map(|e| (e, Answer::Done))
        }
        Command::ExpireLease { step, attempt } => {
            coordination::expire_lease(job, *step, *attempt, rules, now).map(|e| (e, Answer::Done))
        }
        Command::Operate {
            command,
            correlation_id,
            ..
        } => match operator::apply(job, *command, *correlation_id, rules, now)? {
            Outcome::Applied { status, effects } => {
                Ok((effects, Answer::Operator(OperatorOutcome::Applied(status))))
            }
            Outcome::AlreadyDone(message) => Ok((
                Effects::default(),
                Answer::Operator(OperatorOutcome::AlreadyDone(message)),
            )),
        },
    }
}
