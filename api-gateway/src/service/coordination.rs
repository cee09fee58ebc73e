//! The worker protocol over the rules: claim, heartbeat, report, and the
//! lease timer that dispatches again the steps whose worker went silent.

use tracing::warn;

use failover_core::coordination::{self, Report, StepOutcome};
use failover_core::pipeline::StepName;

use super::batch::Command;
use super::{FailoverService, ServiceError, Verdict};
use crate::db::apply::Traces;
use crate::db::{self, StoreError};

/// What a heartbeat answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    /// Whether the worker still holds the lease.
    pub held: bool,
    /// The operator cancelled the job: the worker stops the step.
    pub cancel_requested: bool,
}

impl FailoverService {
    /// `worker_id` claims attempt `attempt` of `step`: the lease is the fencing token.
    pub async fn claim(
        &self,
        job_id: &str,
        step: StepName,
        attempt: u32,
        worker_id: &str,
    ) -> Result<Verdict<()>, ServiceError> {
        let command = Command::Claim {
            step,
            attempt,
            worker_id: worker_id.to_owned(),
        };
        Ok(self.batcher.submit(job_id, command).await?.map(|_| ()))
    }

    /// Renews a lease and records the step's progress.
    pub async fn heartbeat(
        &self,
        job_id: &str,
        step: StepName,
        attempt: u32,
        worker_id: &str,
        progress: u32,
        message: Option<&str>,
    ) -> Result<HeartbeatAnswer, ServiceError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let Some(locked) = db::jobs::lock_step(&mut tx, job_id, step).await? else {
            return Ok(HeartbeatAnswer {
                held: false,
                cancel_requested: false,
            });
        };
        let beat = coordination::heartbeat(
            job_id,
            &locked.step,
            locked.cancel_requested,
            attempt,
            worker_id,
            progress,
            message.map(str::to_owned),
            &self.rules,
            locked.now,
        );
        if beat.held {
            db::apply::apply(&mut tx, &beat.effects, &Traces::default()).await?;
            tx.commit().await.map_err(StoreError::from)?;
        }
        Ok(HeartbeatAnswer {
            held: beat.held,
            cancel_requested: beat.cancel_requested,
        })
    }

    /// Records a worker's outcome and dispatches what follows.
    pub async fn report(
        &self,
        job_id: &str,
        step: StepName,
        attempt: u32,
        worker_id: &str,
        outcome: StepOutcome,
        log: Option<&str>,
    ) -> Result<Verdict<()>, ServiceError> {
        let command = Command::Report(Report {
            step,
            attempt,
            worker_id: worker_id.to_owned(),
            outcome,
            log: log.map(str::to_owned),
        });
        Ok(self.batcher.submit(job_id, command).await?.map(|_| ()))
    }

    /// Dispatches again every step whose lease ran out; returns how many.
    pub async fn expire_leases(&self) -> Result<usize, ServiceError> {
        let expired = db::jobs::expired_leases(&self.pool, 100).await?;
        let verdicts = futures::future::join_all(expired.iter().map(|(job_id, step, attempt)| {
            let command = Command::ExpireLease {
                step: *step,
                attempt: *attempt,
            };
            async move { (job_id, step, attempt, self.batcher.submit(job_id, command).await) }
        }))
        .await;
        let mut handled = 0;
        for (job_id, step, attempt, verdict) in verdicts {
            if matches!(verdict?, Verdict::Accepted(_)) {
                warn!(job_id, step = %step, attempt, "step lease expired");
                handled += 1;
            }
        }
        Ok(handled)
    }
}
