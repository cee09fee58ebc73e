//! Accepting work: test and live failovers, cleanups of test failovers,
//! and the cleanups the auto-cleanup timer starts. The job, its steps, its
//! audit rows, its first dispatch and the request's idempotency key commit
//! together, or nothing does.

use tracing::{Instrument as _, info};
use uuid::Uuid;

use failover_core::JobStatus;
use failover_core::admission::{self, AdmissionFacts, CleanupTrigger, FailoverRequest};
use failover_core::job::id_candidates;
use failover_core::pipeline::JobType;
use failover_platform::telemetry::propagation;

use super::{FailoverService, ServiceError};
use crate::db::apply::Traces;
use crate::db::idempotency::{IdempotencyKey, Remembered};
use crate::db::{self, StoreError};

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
    /// Accepts a test or live failover.
    pub async fn start(
        &self,
        req: FailoverRequest,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Started, ServiceError> {
        // The request's trace becomes the job's.
        let traceparent = propagation::traceparent(&tracing::Span::current());
        self.retrying(|| async {
            let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
            let Some((vm, now)) = db::inventory::lock(&mut tx, req.vm_id).await? else {
                return Err(
                    admission::AdmissionRefusal::VmNotFound { vm_id: req.vm_id }.into(),
                );
            };
            let holders = db::jobs::holders(&mut tx, req.vm_id).await?;
            let candidates = id_candidates(req.job_type, req.vm_id, now);
            let taken = db::jobs::taken_ids(&mut tx, &candidates).await?;
            let admitted = admission::admit(
                &req,
                &AdmissionFacts {
                    vm: Some(&vm),
                    holders: &holders,
                    taken_ids: &taken,
                    candidates: &candidates,
                    now,
                },
                &self.rules,
            )?;
            if let Some(key) = idempotency
                && !db::idempotency::record(&mut tx, key, &admitted.job_id, 202, None, None)
                    .await?
            {
                // A concurrent request with the same key won: nothing of
                // this one is kept; its answer is the other's.
                drop(tx);
                return self.replayed(key).await;
            }
            let span = transition_span(&admitted.job_id, &req, admitted.waiting_for.is_none());
            let due = db::apply::apply(&mut tx, &admitted.effects, &Traces::of(traceparent.clone()))
                .instrument(span)
                .await?;
            tx.commit().await.map_err(StoreError::from)?;
            self.dispatches.hand_over(due);
            self.counted(&admitted.effects);
            info!(job_id = %admitted.job_id, correlation_id = %req.correlation_id, vm_id = %req.vm_id,
                  job_type = %req.job_type, waiting_for = ?admitted.waiting_for, "failover accepted");
            Ok(Started::New(Accepted {
                job_id: admitted.job_id,
                status: JobStatus::Pending,
                vm_id: req.vm_id,
                vm_name: req.vm_name.clone(),
                waiting_for: admitted.waiting_for,
            }))
        })
        .await
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
