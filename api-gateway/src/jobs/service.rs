//! Failover operations over Postgres: accepting a job, and feeding every
//! event through the pure orchestration rules, persisting what they decide
//! (steps, job, audit rows and outbox dispatches) in one transaction. The
//! per-VM rules live here too: operations on one VM run one after another in
//! arrival order, a test failover holds its VM until its cleanup finishes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use sqlx::{PgConnection, PgPool};
use tracing::{Instrument as _, info, warn};
use uuid::Uuid;

use failover_core::orchestration::{
    self, Event, JobState, Refusal, RetryPolicy, StepFailure, Transition,
};
use failover_core::pipeline::{JobType, SkipFlags, StepName};
use failover_core::{JobStatus, StepStatus};
use failover_platform::Settings;
use failover_platform::telemetry::propagation;

use super::model::{JobDetail, JobRow, LockedJob, Placement, StepRow, TaskContext};
use super::store::{self, JobFilter, JobUpdate, NewJob, OutboxEntry, StepFacts, StoredResponse};
use crate::db::StoreError;
use crate::inventory::{self, REPLICATED};
use crate::metrics::GatewayMetrics;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{reason}")]
    VmNotFound { vm_id: Uuid, reason: String },
    #[error("job {0} not found")]
    JobNotFound(String),
    /// The VM has too many unfinished operations, or a test failover of it is up.
    #[error("{message}")]
    VmBusy { message: String, active_job: String },
    /// The request does not apply to the job in its current state.
    #[error("{message}")]
    Conflict { message: String, job_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A validated failover request.
#[derive(Debug, Clone)]
pub struct StartFailover {
    pub job_type: JobType,
    pub vm_id: Uuid,
    pub vm_name: String,
    pub skips: SkipFlags,
    pub auto_cleanup: bool,
    pub test_duration: Option<String>,
    pub rollback_on_failure: bool,
    pub network_mappings: BTreeMap<String, String>,
    pub custom_config: Option<serde_json::Value>,
    pub notification_config: Option<serde_json::Value>,
    pub correlation_id: Uuid,
}

#[derive(Debug, Clone)]
pub struct Accepted {
    pub job_id: String,
    pub status: JobStatus,
    pub vm_id: Uuid,
    pub vm_name: String,
    /// The job this one waits behind, when its VM is busy.
    pub waiting_for: Option<String>,
}

/// An `Idempotency-Key` with the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub endpoint: String,
    pub request_hash: String,
}

/// What a start returns: a new job, or the stored answer of an earlier
/// request with the same idempotency key.
#[derive(Debug, Clone)]
pub enum Started {
    New(Accepted),
    Replayed(StoredResponse),
}

/// What a worker reports.
#[derive(Debug, Clone)]
pub enum StepOutcome {
    Succeeded {
        outputs: BTreeMap<String, String>,
        message: Option<String>,
    },
    Failed(StepFailure),
    Skipped {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Refused(String),
    /// The job does not exist.
    UnknownJob,
}

/// The answer to an operator's cancel or retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorOutcome {
    Applied(JobStatus),
    /// Nothing to do, and nothing wrong (a second cancel).
    AlreadyDone(String),
}

#[derive(Debug, Clone)]
pub struct FailoverService {
    pool: PgPool,
    settings: Arc<Settings>,
    policy: RetryPolicy,
    metrics: GatewayMetrics,
}

/// Renders the stored answer of an accepted request.
pub type Render<'a> = &'a (dyn Fn(&Accepted) -> (u16, serde_json::Value) + Send + Sync);

impl FailoverService {
    pub fn new(pool: PgPool, settings: Arc<Settings>) -> Self {
        let policy = RetryPolicy {
            max_attempts: settings.gateway.step_max_attempts,
            initial_backoff: settings.gateway.step_retry_initial_backoff,
            max_backoff: settings.gateway.step_retry_max_backoff,
        };
        FailoverService {
            pool,
            settings,
            policy,
            metrics: GatewayMetrics::default(),
        }
    }

    /// Counts jobs, transitions and re-dispatches into `metrics`.
    pub fn with_metrics(mut self, metrics: GatewayMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &GatewayMetrics {
        &self.metrics
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn lease_duration(&self) -> Duration {
        self.settings.gateway.lease_duration
    }

    /// Accepts a failover: the job, its steps, the audit row and the first
    /// dispatch (or its place in the VM's queue) commit together, or nothing
    /// does.
    pub async fn start(
        &self,
        req: StartFailover,
        idempotency: Option<&IdempotencyKey>,
        render: Render<'_>,
    ) -> Result<Started, ServiceError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        store::lock_vm(&mut tx, req.vm_id).await?;
        let vm = inventory::get_in(&mut tx, req.vm_id).await?;
        let vm = match vm {
            Some(vm) if vm.spec.replication_state == REPLICATED => vm,
            Some(vm) => {
                return Err(ServiceError::VmNotFound {
                    vm_id: req.vm_id,
                    reason: format!(
                        "Validation failed: VM not replicated (replication_state {}){}",
                        vm.spec.replication_state,
                        if vm.spec.replication_state == "failed-over" {
                            "; it was failed over live: register it again to fail it over again"
                        } else {
                            ""
                        }
                    ),
                });
            }
            None => {
                return Err(ServiceError::VmNotFound {
                    vm_id: req.vm_id,
                    reason: "Validation failed: VM not found or not replicated".into(),
                });
            }
        };
        let holders = store::holders(&mut tx, req.vm_id).await?;
        if let Some(test) = holders
            .iter()
            .find(|h| h.job_type == JobType::Test.as_str())
            .filter(|_| req.job_type == JobType::Live)
        {
            return Err(ServiceError::VmBusy {
                message: format!(
                    "VM has a test failover {} that is still up ({}); clean it up first: POST /api/v1/failover/jobs/{}/cleanup",
                    test.job_id, test.status, test.job_id
                ),
                active_job: test.job_id.clone(),
            });
        }
        let limit = self.settings.gateway.max_operations_per_vm as usize;
        if holders.len() >= limit {
            let active = &holders[0];
            return Err(ServiceError::VmBusy {
                message: format!(
                    "VM has {} unfinished operations, the most it may have; the oldest is {} ({})",
                    holders.len(),
                    active.job_id,
                    active.status
                ),
                active_job: active.job_id.clone(),
            });
        }

        let failover = &self.settings.failover;
        let mappings: BTreeMap<String, String> = vm
            .spec
            .nics
            .iter()
            .map(|nic| {
                let own = match req.job_type {
                    JobType::Live => nic
                        .live_network_id
                        .clone()
                        .or_else(|| failover.default_live_network_id.clone()),
                    _ => nic
                        .test_network_id
                        .clone()
                        .or_else(|| failover.default_test_network_id.clone()),
                };
                let target = req
                    .network_mappings
                    .get(&nic.source_network)
                    .cloned()
                    .or(own)
                    .unwrap_or_default();
                (nic.source_network.clone(), target)
            })
            .collect();
        let source_vm_spec = serde_json::json!({
            "cpu_count": vm.spec.cpu_count,
            "memory_mb": vm.spec.memory_mb,
            "os_family": vm.spec.os_family.as_str(),
            "vm_id": req.vm_id,
            "vm_name": vm.spec.vm_name,
        });
        let context = TaskContext {
            vm_id: req.vm_id,
            vm: vm.spec.clone(),
            network_mappings: mappings.clone(),
            placement: Placement {
                zone_id: failover.zone_id.clone(),
                template_id: failover.template_id.clone(),
                appliance_vm_id: failover.appliance_vm_id.clone(),
            },
            snapshot_name: None,
        };
        let short_vm = req.vm_id.to_string()[..8].to_owned();
        let snapshot_name_template =
            (!req.skips.skip_snapshot).then(|| format!("{}-{short_vm}-{{ts}}", req.job_type));

        let job_id = store::insert_job(
            &mut tx,
            &NewJob {
                job_type: req.job_type.as_str(),
                job_id_prefix: req.job_type.job_id_prefix(),
                correlation_id: req.correlation_id,
                vm_id: req.vm_id,
                vm_name: &req.vm_name,
                source_vm_spec: source_vm_spec.to_string(),
                network_mappings: serde_json::to_string(&mappings).map_err(StoreError::corrupt)?,
                task_context: serde_json::to_value(&context).map_err(StoreError::corrupt)?,
                skip_validation: req.skips.skip_validation,
                skip_snapshot: req.skips.skip_snapshot,
                skip_virtio_injection: req.skips.skip_virtio_injection,
                auto_cleanup: req.auto_cleanup,
                test_duration: req.test_duration.as_deref(),
                custom_config: req.custom_config.as_ref(),
                notification_config: req.notification_config.as_ref(),
                snapshot_name_template,
                rollback_on_failure: req.rollback_on_failure,
                parent_job_id: None,
                outputs: serde_json::json!({}),
                now: chrono::Utc::now(),
                // The request's trace becomes the job's.
                traceparent: propagation::traceparent(&tracing::Span::current()),
            },
        )
        .await?;
        store::track(
            &mut tx,
            req.correlation_id,
            &job_id,
            &format!("failover.{}", req.job_type),
            JobStatus::Pending.as_str(),
            None,
            Some(serde_json::json!({
                "vm_id": req.vm_id,
                "vm_name": req.vm_name,
                "network_mappings": mappings,
                "rollback_on_failure": req.rollback_on_failure,
            })),
        )
        .await?;
        let waiting_for = self
            .create_steps_and_maybe_start(
                &mut tx,
                &job_id,
                req.job_type,
                req.skips,
                req.rollback_on_failure,
                holders.last().map(|h| h.job_id.clone()),
            )
            .await?;
        let accepted = Accepted {
            job_id: job_id.clone(),
            status: JobStatus::Pending,
            vm_id: req.vm_id,
            vm_name: req.vm_name.clone(),
            waiting_for,
        };
        if let Some(key) = idempotency {
            let (status, body) = render(&accepted);
            let stored = StoredResponse {
                request_hash: key.request_hash.clone(),
                job_id: job_id.clone(),
                response_status: i32::from(status),
                response_body: body,
            };
            if !store::store_idempotent_response(&mut tx, &key.key, &key.endpoint, &stored).await? {
                // A concurrent request with the same key won: nothing of
                // this one is kept, its answer is the other's.
                drop(tx);
                return match store::idempotent_response(&self.pool, &key.key, &key.endpoint).await?
                {
                    Some(stored) => Ok(Started::Replayed(stored)),
                    None => Err(StoreError::Vanished.into()),
                };
            }
        }
        tx.commit().await.map_err(StoreError::from)?;
        self.metrics.job_started(req.job_type.as_str());
        info!(job_id, correlation_id = %req.correlation_id, vm_id = %req.vm_id, job_type = %req.job_type, waiting_for = ?accepted.waiting_for, "failover accepted");
        Ok(Started::New(accepted))
    }

    /// Inserts the steps of a new job and starts it, unless `blocked_by`
    /// names an older job holding the VM; returns what it waits for.
    async fn create_steps_and_maybe_start(
        &self,
        tx: &mut PgConnection,
        job_id: &str,
        job_type: JobType,
        skips: SkipFlags,
        rollback_on_failure: bool,
        blocked_by: Option<String>,
    ) -> Result<Option<String>, StoreError> {
        for (position, step) in job_type.pipeline().iter().enumerate() {
            store::insert_step(tx, job_id, step.as_str(), position as i32).await?;
        }
        let (_, created) = JobState::new(job_type, skips, rollback_on_failure);
        let (locked, steps) = store::lock_job(tx, job_id)
            .await?
            .ok_or(StoreError::Vanished)?;
        self.persist(
            tx,
            &locked,
            &steps,
            &created,
            None,
            &BTreeMap::new(),
            &StepFacts::default(),
        )
        .await?;
        match blocked_by {
            Some(other) => {
                store::set_waiting_for(tx, job_id, &other).await?;
                Ok(Some(other))
            }
            None => {
                if let Err(refusal) = self
                    .apply_in(
                        tx,
                        job_id,
                        Event::Start,
                        None,
                        &StepFacts::default(),
                        BTreeMap::new(),
                    )
                    .await?
                {
                    warn!(job_id, %refusal, "a new job could not start");
                }
                Ok(None)
            }
        }
    }

    /// Starts a cleanup of a test failover (or of a failed failover that
    /// kept its state); returns the cleanup job.
    pub async fn start_cleanup(
        &self,
        target_job_id: &str,
        correlation_id: Uuid,
        trigger: &str,
    ) -> Result<Accepted, ServiceError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let accepted = self
            .cleanup_in(&mut tx, target_job_id, correlation_id, trigger)
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.metrics.job_started(JobType::Cleanup.as_str());
        Ok(accepted)
    }

    async fn cleanup_in(
        &self,
        tx: &mut PgConnection,
        target_job_id: &str,
        correlation_id: Uuid,
        trigger: &str,
    ) -> Result<Accepted, ServiceError> {
        let Some(target) = store::get_job_in(tx, target_job_id).await? else {
            return Err(ServiceError::JobNotFound(target_job_id.to_owned()));
        };
        store::lock_vm(tx, target.vm_id).await?;
        let (locked, _) = store::lock_job(tx, target_job_id)
            .await?
            .ok_or(StoreError::Vanished)?;
        let conflict = |message: String| ServiceError::Conflict {
            message,
            job_id: target_job_id.to_owned(),
        };
        if target.job_type == JobType::Cleanup.as_str() {
            return Err(conflict(
                "a cleanup job cannot be cleaned up; retry it instead".into(),
            ));
        }
        if let Some(existing) = &target.cleanup_job_id {
            return Err(conflict(format!(
                "job already has cleanup job {existing}; inspect it, and retry it if it failed"
            )));
        }
        let status = JobStatus::parse(&target.status).unwrap_or(JobStatus::Pending);
        let cleanable = match status {
            JobStatus::Completed => target.job_type == JobType::Test.as_str(),
            JobStatus::Failed | JobStatus::Cancelled => locked.holds_vm,
            _ => false,
        };
        if !cleanable {
            return Err(conflict(match status {
                JobStatus::Completed => {
                    "a completed live failover is the permanent cut-over; there is nothing to clean up".into()
                }
                JobStatus::Failed | JobStatus::Cancelled => format!(
                    "job is {} and left nothing behind; there is nothing to clean up",
                    status.as_str()
                ),
                _ => format!(
                    "job is {}; wait for it to finish, or cancel it",
                    status.as_str()
                ),
            }));
        }
        let has_snapshot = target.linstor_snapshot_name.is_some();
        let job_id = store::insert_job(
            tx,
            &NewJob {
                job_type: JobType::Cleanup.as_str(),
                job_id_prefix: JobType::Cleanup.job_id_prefix(),
                correlation_id,
                vm_id: target.vm_id,
                vm_name: &target.vm_name,
                source_vm_spec: target.source_vm_spec.clone(),
                network_mappings: target.network_mappings.clone(),
                task_context: locked.task_context.clone(),
                skip_validation: false,
                skip_snapshot: !has_snapshot,
                skip_virtio_injection: false,
                auto_cleanup: false,
                test_duration: None,
                custom_config: None,
                notification_config: None,
                snapshot_name_template: target.linstor_snapshot_name.clone(),
                rollback_on_failure: false,
                parent_job_id: Some(target_job_id),
                outputs: locked.outputs.clone(),
                now: chrono::Utc::now(),
                traceparent: propagation::traceparent(&tracing::Span::current()),
            },
        )
        .await?;
        store::link_cleanup(tx, target_job_id, &job_id).await?;
        for (cid, jid, operation) in [
            (correlation_id, job_id.as_str(), "failover.cleanup"),
            (locked.correlation_id, target_job_id, "cleanup.requested"),
        ] {
            store::track(
                tx,
                cid,
                jid,
                operation,
                JobStatus::Pending.as_str(),
                None,
                Some(serde_json::json!({"test_job_id": target_job_id, "cleanup_job_id": job_id, "trigger": trigger})),
            )
            .await?;
        }
        self.create_steps_and_maybe_start(
            tx,
            &job_id,
            JobType::Cleanup,
            SkipFlags {
                skip_snapshot: !has_snapshot,
                ..Default::default()
            },
            false,
            None,
        )
        .await?;
        info!(job_id, test_job_id = target_job_id, correlation_id = %correlation_id, trigger, "cleanup accepted");
        Ok(Accepted {
            job_id,
            status: JobStatus::Pending,
            vm_id: target.vm_id,
            vm_name: target.vm_name,
            waiting_for: None,
        })
    }

    /// Starts the cleanups whose auto-cleanup time has come; each once, even
    /// with several replicas. Returns how many.
    pub async fn run_due_auto_cleanups(&self) -> Result<usize, ServiceError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let due = store::due_auto_cleanups(&mut tx, 10).await?;
        for job_id in &due {
            let correlation_id = Uuid::new_v4();
            // Each cleanup the timer starts is the root of a trace of its own.
            let span = tracing::info_span!(
                parent: None,
                "auto_cleanup",
                correlation_id = %correlation_id,
                test_job_id = %job_id,
            );
            let accepted = self
                .cleanup_in(&mut tx, job_id, correlation_id, "auto_cleanup")
                .instrument(span.clone())
                .await?;
            span.in_scope(|| info!(test_job_id = %job_id, cleanup_job_id = %accepted.job_id, "auto-cleanup started"));
        }
        tx.commit().await.map_err(StoreError::from)?;
        for _ in &due {
            self.metrics.job_started(JobType::Cleanup.as_str());
        }
        Ok(due.len())
    }

    /// Claims a queued step for `worker_id`: the lease is the fencing token.
    pub async fn claim(
        &self,
        job_id: &str,
        step: StepName,
        attempt: u32,
        worker_id: &str,
    ) -> Result<Verdict, ServiceError> {
        let facts = StepFacts {
            worker_id: Some(worker_id),
            lease: Some(self.lease_duration()),
            ..Default::default()
        };
        self.apply_event(
            job_id,
            Event::Claimed { step, attempt },
            None,
            &facts,
            BTreeMap::new(),
        )
        .await
    }

    /// Renews a lease; returns (held, cancel requested).
    pub async fn heartbeat(
        &self,
        job_id: &str,
        step: StepName,
        attempt: u32,
        worker_id: &str,
        progress: u32,
        message: Option<&str>,
    ) -> Result<(bool, bool), ServiceError> {
        Ok(store::renew_lease(
            &self.pool,
            job_id,
            step.as_str(),
            attempt,
            worker_id,
            self.lease_duration(),
            progress,
            message,
        )
        .await?)
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
    ) -> Result<Verdict, ServiceError> {
        let (event, outputs, message) = match outcome {
            StepOutcome::Succeeded { outputs, message } => {
                (Event::Succeeded { step, attempt }, outputs, message)
            }
            StepOutcome::Failed(failure) => (
                Event::Failed {
                    step,
                    attempt,
                    failure,
                },
                BTreeMap::new(),
                None,
            ),
            StepOutcome::Skipped { reason } => (
                Event::Skipped {
                    step,
                    attempt,
                    reason,
                },
                BTreeMap::new(),
                None,
            ),
        };
        let facts = StepFacts {
            log,
            message: message.as_deref(),
            ..Default::default()
        };
        self.apply_event(job_id, event, Some(worker_id), &facts, outputs)
            .await
    }

    /// The operator cancels a job.
    pub async fn cancel(
        &self,
        job_id: &str,
        correlation_id: Uuid,
    ) -> Result<OperatorOutcome, ServiceError> {
        self.operator(job_id, Event::CancelRequested, correlation_id)
            .await
    }

    /// The operator retries a failed job from its failed step.
    pub async fn retry(
        &self,
        job_id: &str,
        correlation_id: Uuid,
    ) -> Result<OperatorOutcome, ServiceError> {
        self.operator(job_id, Event::RetryRequested, correlation_id)
            .await
    }

    async fn operator(
        &self,
        job_id: &str,
        event: Event,
        correlation_id: Uuid,
    ) -> Result<OperatorOutcome, ServiceError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let Some((job, _)) = store::lock_job(&mut tx, job_id).await? else {
            return Err(ServiceError::JobNotFound(job_id.to_owned()));
        };
        store::lock_vm(&mut tx, job.vm_id).await?;
        let verdict = self
            .apply_in(
                &mut tx,
                job_id,
                event.clone(),
                None,
                &StepFacts::default(),
                BTreeMap::new(),
            )
            .await?;
        match verdict {
            Ok(status) => {
                store::track(
                    &mut tx,
                    job.correlation_id,
                    job_id,
                    &format!("operator.{}", event.name()),
                    status.as_str(),
                    None,
                    Some(serde_json::json!({"request_correlation_id": correlation_id})),
                )
                .await?;
                tx.commit().await.map_err(StoreError::from)?;
                Ok(OperatorOutcome::Applied(status))
            }
            Err(refusal) => match (&event, &refusal) {
                (Event::CancelRequested, Refusal::AlreadyCancelling) => Ok(
                    OperatorOutcome::AlreadyDone("the job is already being cancelled".into()),
                ),
                (Event::CancelRequested, Refusal::JobFinished(JobStatus::Cancelled)) => Ok(
                    OperatorOutcome::AlreadyDone("the job is already cancelled".into()),
                ),
                _ => Err(ServiceError::Conflict {
                    message: refusal.to_string(),
                    job_id: job_id.to_owned(),
                }),
            },
        }
    }

    /// Re-dispatches every step whose lease ran out; returns how many.
    pub async fn expire_leases(&self) -> Result<usize, ServiceError> {
        let expired = store::expired_leases(&self.pool, 100).await?;
        let mut handled = 0;
        for (job_id, step_name, attempt) in expired {
            let Some(step) = StepName::parse(&step_name) else {
                continue;
            };
            let attempt = u32::try_from(attempt).unwrap_or_default();
            let verdict = self
                .apply_event(
                    &job_id,
                    Event::LeaseExpired { step, attempt },
                    None,
                    &StepFacts::default(),
                    BTreeMap::new(),
                )
                .await?;
            if verdict == Verdict::Accepted {
                handled += 1;
            }
        }
        Ok(handled)
    }

    async fn apply_event(
        &self,
        job_id: &str,
        event: Event,
        reporter: Option<&str>,
        facts: &StepFacts<'_>,
        outputs: BTreeMap<String, String>,
    ) -> Result<Verdict, ServiceError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let Some((job, steps)) = store::lock_job(&mut tx, job_id).await? else {
            return Ok(Verdict::UnknownJob);
        };
        if let Some(step) = event.step() {
            let row = steps.iter().find(|s| s.step_name == step.as_str());
            if let (Some(reporter), Some(row)) = (reporter, row)
                && row.status == StepStatus::Running.as_str()
                && row.attempt as u32 == event.attempt()
                && row.worker_id.as_deref() != Some(reporter)
            {
                return Ok(Verdict::Refused(format!(
                    "step {step} attempt {} is leased to another worker",
                    event.attempt()
                )));
            }
            if let (Event::LeaseExpired { .. }, Some(row)) = (&event, row)
                && row
                    .lease_expires_at
                    .is_none_or(|until| until > chrono::Utc::now())
            {
                return Ok(Verdict::Refused("the lease was renewed".into()));
            }
        }
        // A change that may release the VM serializes with admissions.
        store::lock_vm(&mut tx, job.vm_id).await?;
        match self
            .apply_in(&mut tx, job_id, event, reporter, facts, outputs)
            .await?
        {
            Ok(_) => {
                tx.commit().await.map_err(StoreError::from)?;
                Ok(Verdict::Accepted)
            }
            Err(refusal) => Ok(Verdict::Refused(refusal.to_string())),
        }
    }

    /// Applies `event` to the locked job within `tx`: the state machine's
    /// verdict, persisted; releasing the VM starts the next job waiting for it.
    async fn apply_in(
        &self,
        tx: &mut PgConnection,
        job_id: &str,
        event: Event,
        reporter: Option<&str>,
        facts: &StepFacts<'_>,
        outputs: BTreeMap<String, String>,
    ) -> Result<Result<JobStatus, Refusal>, StoreError> {
        let (job, steps) = store::lock_job(tx, job_id)
            .await?
            .ok_or(StoreError::Vanished)?;
        // One span per transition, in the job's trace whoever caused it.
        let span = tracing::info_span!(
            "job.transition",
            otel.name = %format!("transition {}", event.name()),
            correlation_id = %job.correlation_id,
            job_id,
            vm_id = %job.vm_id,
            job_type = %job.job_type,
            step = event.step().map(StepName::as_str),
            attempt = event.attempt(),
            event = event.name(),
            worker_id = reporter,
            job_status = tracing::field::Empty,
            refusal = tracing::field::Empty,
        );
        propagation::join_trace(&span, job.traceparent.as_deref());
        async {
            let state = job.state(&steps)?;
            let transition = match orchestration::apply(&state, &event, &self.policy) {
                Ok(t) => t,
                Err(refusal) => {
                    tracing::Span::current().record("refusal", refusal.to_string());
                    return Ok(Err(refusal));
                }
            };
            tracing::Span::current().record("job_status", transition.job_status.as_str());
            if let Event::LeaseExpired { step, attempt } = &event {
                self.metrics.lease_expired(step.as_str());
                warn!(job_id, correlation_id = %job.correlation_id, step = %step, attempt, "step lease expired");
            }
            info!(
                job_id,
                correlation_id = %job.correlation_id,
                step = event.step().map(StepName::as_str),
                attempt = event.attempt(),
                event = event.name(),
                worker_id = reporter,
                job_status = transition.job_status.as_str(),
                "job event applied"
            );
            self.persist(tx, &job, &steps, &transition, Some(&event), &outputs, facts)
                .await?;
            Ok(Ok(transition.job_status))
        }
        .instrument(span)
        .await
    }

    /// Persists `transition` of `job`, whose rows the caller locked and read
    /// (`steps`) in this transaction.
    #[allow(clippy::too_many_arguments)]
    async fn persist(
        &self,
        tx: &mut PgConnection,
        job: &LockedJob,
        steps: &[StepRow],
        transition: &Transition,
        event: Option<&Event>,
        new_outputs: &BTreeMap<String, String>,
        facts: &StepFacts<'_>,
    ) -> Result<(), StoreError> {
        let mut state = job.state(steps)?;
        state.absorb(transition);
        let mut outputs = job.outputs()?;
        outputs.extend(new_outputs.clone());
        let mut position = steps.len() as i32;
        for added in &transition.added_steps {
            if !steps.iter().any(|s| s.step_name == added.as_str()) {
                store::insert_step(tx, &job.job_id, added.as_str(), position).await?;
                position += 1;
            }
        }
        for update in &transition.step_updates {
            let is_event_step = event.and_then(Event::step) == Some(update.step);
            let step_facts = StepFacts {
                worker_id: facts.worker_id,
                lease: facts.lease,
                log: facts.log.filter(|_| is_event_step),
                message: facts.message.filter(|_| is_event_step),
            };
            store::update_step(tx, &job.job_id, update, &step_facts).await?;
            store::track(
                tx,
                job.correlation_id,
                &job.job_id,
                &format!("step.{}", update.step),
                update.status.as_str(),
                update.error.as_ref().map(|e| e.message.as_str()),
                Some(serde_json::json!({
                    "attempt": update.attempt,
                    "message": update.message,
                    "error_code": update.error.as_ref().map(|e| e.code.as_str()),
                    "worker_id": facts.worker_id,
                })),
            )
            .await?;
        }
        let error = transition
            .job_error
            .as_ref()
            .map(|e| (e.code.as_str(), e.message.as_str(), e.step.as_str()));
        let status_changed = transition.job_status.as_str() != job.status;
        let holds_vm = state.holds_vm();
        let job_type = job.job_type()?;
        let auto_cleanup_after = (status_changed
            && transition.job_status == JobStatus::Completed
            && job_type == JobType::Test
            && job.auto_cleanup)
            .then(|| {
                job.test_duration
                    .as_deref()
                    .and_then(|d| humantime::parse_duration(d).ok())
                    .unwrap_or(self.settings.gateway.default_test_duration)
            });
        store::update_job(
            tx,
            &job.job_id,
            &JobUpdate {
                status: transition.job_status,
                current_step: transition.current_step.map(StepName::as_str),
                outputs: serde_json::to_value(&outputs).map_err(StoreError::corrupt)?,
                destination_vm_id: outputs.get("destination_vm_id").map(String::as_str),
                error,
                clear_error: transition.clear_error,
                mark_started: matches!(event, Some(Event::Claimed { .. })),
                cancel_requested: transition.cancel_requested,
                holds_vm,
                auto_cleanup_after,
            },
        )
        .await?;
        if status_changed && event.is_some() {
            store::track(
                tx,
                job.correlation_id,
                &job.job_id,
                &format!("failover.{}", job.job_type),
                transition.job_status.as_str(),
                transition.job_error.as_ref().map(|e| e.message.as_str()),
                transition.job_error.as_ref().map(
                    |e| serde_json::json!({"error_code": e.code.as_str(), "step": e.step.as_str()}),
                ),
            )
            .await?;
        }
        // The dispatches continue the trace of the transition that made them.
        let traceparent =
            propagation::traceparent(&tracing::Span::current()).or_else(|| job.traceparent.clone());
        for dispatch in &transition.dispatch {
            if dispatch.attempt > 1 {
                self.metrics
                    .step_redispatched(dispatch.step.as_str(), event.map_or("start", Event::name));
            }
            let task = job.task(dispatch.step, dispatch.attempt, &outputs)?;
            store::enqueue(
                tx,
                OutboxEntry {
                    job_id: &job.job_id,
                    step_name: dispatch.step.as_str(),
                    attempt: dispatch.attempt,
                    correlation_id: job.correlation_id,
                    routing_key: dispatch.step.as_str(),
                    payload: task.encode_to_vec(),
                    delay: dispatch.delay,
                    traceparent: traceparent.clone(),
                },
            )
            .await?;
        }
        store::notify_changed(tx, &job.job_id).await?;
        let mut released = job.holds_vm && !holds_vm;
        if status_changed && transition.job_status == JobStatus::Completed {
            match job_type {
                JobType::Live => store::mark_failed_over(tx, job.vm_id).await?,
                JobType::Cleanup => {
                    if let Some(parent) = &job.parent_job_id {
                        store::release(tx, parent).await?;
                        released = true;
                    }
                }
                JobType::Test => {}
            }
        }
        if transition.job_status.is_terminal() && status_changed {
            let seconds = (chrono::Utc::now() - job.created_at).as_seconds_f64();
            self.metrics
                .job_finished(&job.job_type, transition.job_status.as_str(), seconds);
            if let Some(failure) = state
                .failure
                .as_ref()
                .filter(|_| transition.job_status == JobStatus::Failed)
            {
                self.metrics
                    .job_failed(&job.job_type, failure.code.as_str());
            }
            info!(job_id = %job.job_id, correlation_id = %job.correlation_id, status = transition.job_status.as_str(), holds_vm, "job finished");
        }
        if released {
            Box::pin(self.start_next_waiting(tx, job.vm_id)).await?;
        }
        Ok(())
    }

    /// Starts the oldest job waiting for `vm_id`, once no older job holds it.
    async fn start_next_waiting(
        &self,
        tx: &mut PgConnection,
        vm_id: Uuid,
    ) -> Result<(), StoreError> {
        let holders = store::holders(tx, vm_id).await?;
        let Some(first) = holders.first() else {
            return Ok(());
        };
        let status = JobStatus::parse(&first.status).unwrap_or(JobStatus::Pending);
        if status == JobStatus::Pending && !first.started {
            info!(job_id = %first.job_id, vm_id = %vm_id, "the VM is free; starting the job that waited for it");
            let job_id = first.job_id.clone();
            if let Err(refusal) = self
                .apply_in(
                    tx,
                    &job_id,
                    Event::Start,
                    None,
                    &StepFacts::default(),
                    BTreeMap::new(),
                )
                .await?
            {
                warn!(job_id, %refusal, "waiting job could not start");
            }
        }
        Ok(())
    }

    pub async fn get_job(&self, job_id: &str) -> Result<JobDetail, ServiceError> {
        store::get_job(&self.pool, job_id)
            .await?
            .ok_or_else(|| ServiceError::JobNotFound(job_id.to_owned()))
    }

    pub async fn get_job_by_correlation(
        &self,
        correlation_id: Uuid,
    ) -> Result<JobDetail, ServiceError> {
        let job_id = store::job_id_by_correlation(&self.pool, correlation_id)
            .await?
            .ok_or_else(|| ServiceError::JobNotFound(correlation_id.to_string()))?;
        self.get_job(&job_id).await
    }

    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<(Vec<JobRow>, i64), ServiceError> {
        Ok(store::list_jobs(&self.pool, filter).await?)
    }

    /// Stores the answer to an operator request with an idempotency key.
    /// Best effort: the action itself is already harmless to repeat.
    pub async fn remember(
        &self,
        key: &IdempotencyKey,
        job_id: &str,
        status: u16,
        body: &serde_json::Value,
    ) {
        let stored = StoredResponse {
            request_hash: key.request_hash.clone(),
            job_id: job_id.to_owned(),
            response_status: i32::from(status),
            response_body: body.clone(),
        };
        let result = async {
            let mut conn = self.pool.acquire().await.map_err(StoreError::from)?;
            store::store_idempotent_response(&mut conn, &key.key, &key.endpoint, &stored).await
        }
        .await;
        if let Err(e) = result {
            warn!(error = %e, job_id, "cannot store the idempotent answer");
        }
    }

    pub async fn idempotent_response(
        &self,
        key: &str,
        endpoint: &str,
    ) -> Result<Option<StoredResponse>, ServiceError> {
        Ok(store::idempotent_response(&self.pool, key, endpoint).await?)
    }
}
