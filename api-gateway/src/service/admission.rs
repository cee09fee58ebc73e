//! Accepting work: test and live failovers, cleanups of test failovers,
//! and the cleanups the auto-cleanup timer starts. The job, its steps, its
//! audit rows, its first dispatch and the request's idempotency key commit
//! together, or nothing does.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::{Instrument as _, info};
use uuid::Uuid;

use failover_core::JobStatus;
use failover_core::admission::{
    self, AdmissionFacts, CleanupTrigger, FailoverRequest, RegisteredVm,
};
use failover_core::effects::Effects;
use failover_core::holds::Holder;
use failover_core::rules::Rules;
use failover_core::job::id_candidates;
use failover_core::pipeline::JobType;
use failover_platform::telemetry::propagation;

use super::lanes::Lanes;
use super::{FailoverService, ServiceError};
use crate::db::apply::Traces;
use crate::db::idempotency::{IdempotencyKey, Remembered};
use crate::db::{self, StoreError};
use crate::metrics::GatewayMetrics;
use crate::relay::Dispatches;

/// An accepted job.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub job_id: String,
    pub status: JobStatus,
    pub vm_id: Uuid,
    pub vm_name: String,
    /// The job this one waits behind, when its VM is busy.
    pub waiting_for: Option<String>,
}

/// What a request that starts a job came to: a new job, or the job an
/// earlier request with the same idempotency key started.
#[derive(Debug, Clone)]
pub enum Started {
    New(Accepted),
    Replayed(Remembered),
}

/// The span of a new job's first transition, in the request's trace.
fn transition_span(job_id: &str, req: &FailoverRequest, starts: bool) -> tracing::Span {
    tracing::info_span!(
        "job.transition",
        otel.name = if starts { "transition start" } else { "transition accepted" },
        correlation_id = %req.correlation_id,
        job_id,
        vm_id = %req.vm_id,
        job_type = %req.job_type,
        event = if starts { "start" } else { "accepted" },
    )
}

impl FailoverService {
    /// Accepts a test or live failover, in the next batch of admissions.
    pub async fn start(
        &self,
        req: FailoverRequest,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Started, ServiceError> {
        let (reply, answer) = oneshot::channel();
        let request = Admission {
            req,
            idempotency: idempotency.cloned(),
            // The request's trace becomes the job's.
            span: tracing::Span::current(),
            reply,
        };
        if self.admissions.send(request).is_err() {
            return Err(StoreError::Unavailable(sqlx::Error::PoolClosed).into());
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable(sqlx::Error::PoolClosed).into()))
    }

    async fn replayed(&self, key: &IdempotencyKey) -> Result<Started, ServiceError> {
        match db::idempotency::find(&self.pool, &key.key, &key.endpoint).await? {
            Some(remembered) => Ok(Started::Replayed(remembered)),
            None => Err(StoreError::Vanished.into()),
        }
    }

    /// Starts the cleanup of a test failover (or of a failed failover that
    /// kept its state): a job of its own, linked both ways.
    pub async fn start_cleanup(
        &self,
        target_job_id: &str,
        correlation_id: Uuid,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Started, ServiceError> {
        let traceparent = propagation::traceparent(&tracing::Span::current());
        self.retrying(|| async {
            let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
            let (accepted, effects) = self
                .decide_cleanup(&mut tx, target_job_id, CleanupTrigger::Request, correlation_id)
                .await?;
            if let Some(key) = idempotency
                && !db::idempotency::record(&mut tx, key, &accepted.job_id, 202, None, None)
                    .await?
            {
                drop(tx);
                return self.replayed(key).await;
            }
            let due = db::apply::apply(&mut tx, &effects, &Traces::of(traceparent.clone())).await?;
            tx.commit().await.map_err(StoreError::from)?;
            self.dispatches.hand_over(due);
            self.counted(&effects);
            info!(job_id = %accepted.job_id, test_job_id = target_job_id, correlation_id = %correlation_id,
                  trigger = "request", "cleanup accepted");
            Ok(Started::New(accepted))
        })
        .await
    }

    /// Decides the cleanup of `target_job_id` within `tx`: locks the job and
    /// its VM, and answers the cleanup job with what to write.
    async fn decide_cleanup(
        &self,
        tx: &mut sqlx::PgConnection,
        target_job_id: &str,
        trigger: CleanupTrigger,
        correlation_id: Uuid,
    ) -> Result<(Accepted, failover_core::effects::Effects), ServiceError> {
        let Some(target) = db::jobs::lock(tx, target_job_id).await? else {
            return Err(ServiceError::JobNotFound(target_job_id.to_owned()));
        };
        let job = &target.record;
        db::jobs::lock_vm(tx, job.vm_id).await?;
        let candidates = id_candidates(JobType::Cleanup, job.vm_id, target.now);
        let taken = db::jobs::taken_ids(tx, &candidates).await?;
        let admitted = admission::cleanup(
            job,
            trigger,
            correlation_id,
            &candidates,
            &taken,
            &self.rules,
            target.now,
        )?;
        Ok((
            Accepted {
                job_id: admitted.job_id,
                status: JobStatus::Pending,
                vm_id: job.vm_id,
                vm_name: job.vm_name.clone(),
                waiting_for: None,
            },
            admitted.effects,
        ))
    }

    /// Starts the cleanups whose auto-cleanup time has come; each once, even
    /// with several replicas (the due job is taken with `SKIP LOCKED`).
    /// Returns how many.
    pub async fn run_due_auto_cleanups(&self) -> Result<usize, ServiceError> {
        let mut started = 0;
        while started < 10 {
            let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
            let Some(job_id) = db::jobs::due_auto_cleanups(&mut tx, 1).await?.pop() else {
                return Ok(started);
            };
            let correlation_id = Uuid::new_v4();
            // Each cleanup the timer starts is the root of a trace of its own.
            let span = tracing::info_span!(
                parent: None,
                "auto_cleanup",
                correlation_id = %correlation_id,
                test_job_id = %job_id,
            );
            let decided = self
                .decide_cleanup(
                    &mut tx,
                    &job_id,
                    CleanupTrigger::AutoCleanup,
                    correlation_id,
                )
                .instrument(span.clone())
                .await;
            let (accepted, effects) = match decided {
                Ok(decided) => decided,
                Err(e @ ServiceError::Store(_)) => return Err(e),
                Err(refusal) => {
                    // Tried again at the next tick.
                    span.in_scope(|| tracing::warn!(test_job_id = %job_id, error = %refusal, "auto-cleanup cannot start now"));
                    return Ok(started);
                }
            };
            let traceparent = propagation::traceparent(&span);
            let due = db::apply::apply(&mut tx, &effects, &Traces::of(traceparent.clone())).await?;
            tx.commit().await.map_err(StoreError::from)?;
            self.dispatches.hand_over(due);
            self.counted(&effects);
            span.in_scope(|| info!(test_job_id = %job_id, cleanup_job_id = %accepted.job_id, "auto-cleanup started"));
            started += 1;
        }
        Ok(started)
    }
}

/// A request to start a failover, waiting for its batch.
#[derive(Debug)]
pub(super) struct Admission {
    req: FailoverRequest,
    idempotency: Option<IdempotencyKey>,
    span: tracing::Span,
    reply: oneshot::Sender<Result<Started, ServiceError>>,
}

/// What admitting a batch works with.
#[derive(Debug, Clone)]
pub(super) struct Admitter {
    pub pool: sqlx::PgPool,
    pub rules: Arc<Rules>,
    pub metrics: GatewayMetrics,
    pub dispatches: Dispatches,
}

/// Admissions decided together.
const LANES: usize = 2;
const MAX_BATCH: usize = 64;
const CONFLICT_RETRIES: u32 = 5;

impl Admitter {
    pub fn start(self) -> Lanes<Admission> {
        Lanes::start(LANES, MAX_BATCH, move |batch| {
            let admitter = self.clone();
            async move { admitter.answer(batch).await }
        })
    }

    async fn answer(&self, batch: Vec<Admission>) {
        let mut tries = 0;
        let result = loop {
            match self.admit_all(&batch).await {
                Err(ServiceError::Store(e)) if e.is_conflict() && tries < CONFLICT_RETRIES => {
                    tries += 1;
                }
                other => break other,
            }
        };
        match result {
            Ok((outcomes, effects)) => {
                for event in &effects.metrics {
                    self.metrics.count(event);
                }
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    if let Ok(Started::New(accepted)) = &outcome {
                        request.span.in_scope(|| {
                            info!(job_id = %accepted.job_id, correlation_id = %request.req.correlation_id,
                                  vm_id = %request.req.vm_id, job_type = %request.req.job_type,
                                  waiting_for = ?accepted.waiting_for, "failover accepted")
                        });
                    }
                    let _ = request.reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, size = batch.len(), "a batch of admissions failed");
                for request in batch {
                    let _ = request.reply.send(Err(e.again()));
                }
            }
        }
    }

    /// One transaction for the whole batch: the VMs locked in the order of
    /// their ids, their holders and the ids their new jobs may take read
    /// once, each request decided in arrival order (a later one of the same
    /// VM waits behind an earlier one), everything written in one statement.
    async fn admit_all(
        &self,
        batch: &[Admission],
    ) -> Result<(Vec<Result<Started, ServiceError>>, Effects), ServiceError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let mut vm_ids: Vec<Uuid> = batch.iter().map(|a| a.req.vm_id).collect();
        vm_ids.sort();
        vm_ids.dedup();
        let (locked, now) = db::inventory::lock_many(&mut tx, &vm_ids).await?;
        let now = now.unwrap_or_else(chrono::Utc::now);
        let mut taken: Vec<String> = Vec::new();
        let mut holders: HashMap<Uuid, Vec<Holder>> = HashMap::new();
        let mut vms: HashMap<Uuid, RegisteredVm> = HashMap::new();
        for vm in locked {
            taken.extend(vm.recent_job_ids);
            holders.insert(vm.vm.vm_id, vm.holders);
            vms.insert(vm.vm.vm_id, vm.vm);
        }
        let candidates: Vec<Vec<String>> = batch
            .iter()
            .map(|a| id_candidates(a.req.job_type, a.req.vm_id, now))
            .collect();
        let mut effects = Effects::default();
        let mut traces = Traces::default();
        let mut outcomes = Vec::with_capacity(batch.len());
        for (request, candidates) in batch.iter().zip(&candidates) {
            let req = &request.req;
            let vm_holders = holders.entry(req.vm_id).or_default();
            let decided = admission::admit(
                req,
                &AdmissionFacts {
                    vm: vms.get(&req.vm_id),
                    holders: vm_holders,
                    taken_ids: &taken,
                    candidates,
                    now,
                },
                &self.rules,
            );
            let admitted = match decided {
                Ok(admitted) => admitted,
                Err(refusal) => {
                    outcomes.push(Err(refusal.into()));
                    continue;
                }
            };
            if let Some(key) = &request.idempotency
                && !db::idempotency::record(&mut tx, key, &admitted.job_id, 202, None, None)
                    .await?
            {
                // An earlier request with the same key started a job.
                let remembered = db::idempotency::find_in(&mut tx, &key.key, &key.endpoint)
                    .await?
                    .ok_or(StoreError::Vanished)?;
                outcomes.push(Ok(Started::Replayed(remembered)));
                continue;
            }
            let span = request
                .span
                .in_scope(|| transition_span(&admitted.job_id, req, admitted.waiting_for.is_none()));
            traces.jobs.push((
                admitted.job_id.clone(),
                propagation::traceparent(&span)
                    .or_else(|| propagation::traceparent(&request.span)),
            ));
            if let Some(holder) = admitted.as_holder() {
                vm_holders.push(holder);
            }
            taken.push(admitted.job_id.clone());
            outcomes.push(Ok(Started::New(Accepted {
                job_id: admitted.job_id.clone(),
                status: JobStatus::Pending,
                vm_id: req.vm_id,
                vm_name: req.vm_name.clone(),
                waiting_for: admitted.waiting_for.clone(),
            })));
            effects.extend(admitted.effects);
        }
        if !effects.is_empty() {
            let due = db::apply::apply(&mut tx, &effects, &traces).await?;
            tx.commit().await.map_err(StoreError::from)?;
            self.dispatches.hand_over(due);
        }
        Ok((outcomes, effects))
    }
}
