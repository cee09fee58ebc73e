//! Failover operations over Postgres: accepting a job, and feeding every step
//! event through the pure orchestration rules, persisting what they decide
//! (steps, job, audit rows and outbox dispatches) in one transaction.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use sqlx::PgPool;
use tracing::{info, warn};
use uuid::Uuid;

use failover_core::Settings;
use failover_core::orchestration::{
    self, Event, JobState, Refusal, RetryPolicy, StepFailure, Transition,
};
use failover_core::pipeline::{JobType, SkipFlags, StepName};
use failover_core::{JobStatus, StepStatus};

use super::model::{JobDetail, JobRow, Placement, TaskContext};
use super::store::{self, JobFilter, JobUpdate, NewJob, OutboxEntry, StepFacts};
use crate::db::StoreError;
use crate::inventory::{self, REPLICATED};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{reason}")]
    VmNotFound { vm_id: Uuid, reason: String },
    #[error("job {0} not found")]
    JobNotFound(String),
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
    pub network_mappings: BTreeMap<String, String>,
    pub custom_config: Option<serde_json::Value>,
    pub notification_config: Option<serde_json::Value>,
    pub correlation_id: Uuid,
}

#[derive(Debug, Clone)]
pub struct Accepted {
    pub job_id: String,
    pub status: JobStatus,
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

#[derive(Debug, Clone)]
pub struct FailoverService {
    pool: PgPool,
    settings: Arc<Settings>,
    policy: RetryPolicy,
}

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
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn lease_duration(&self) -> Duration {
        self.settings.gateway.lease_duration
    }

    /// Accepts a failover: the job, its steps, the audit row and the first
    /// dispatch commit together, or nothing does.
    pub async fn start(&self, req: StartFailover) -> Result<Accepted, ServiceError> {
        let vm = inventory::get(&self.pool, req.vm_id).await?;
        let vm = match vm {
            Some(vm) if vm.spec.replication_state == REPLICATED => vm,
            Some(vm) => {
                return Err(ServiceError::VmNotFound {
                    vm_id: req.vm_id,
                    reason: format!(
                        "Validation failed: VM not replicated (replication_state {})",
                        vm.spec.replication_state
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

        let failover = &self.settings.failover;
        let mappings: BTreeMap<String, String> = vm
            .spec
            .nics
            .iter()
            .map(|nic| {
                let own = match req.job_type {
                    JobType::Test => nic
                        .test_network_id
                        .clone()
                        .or_else(|| failover.default_test_network_id.clone()),
                    JobType::Live => nic
                        .live_network_id
                        .clone()
                        .or_else(|| failover.default_live_network_id.clone()),
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

        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
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
                now: chrono::Utc::now(),
            },
        )
        .await?;
        for (position, step) in req.job_type.pipeline().iter().enumerate() {
            store::insert_step(&mut tx, &job_id, step.as_str(), position as i32).await?;
        }
        let (state, transition) = JobState::new(req.job_type, req.skips);
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
            })),
        )
        .await?;
        let (locked, steps) = store::lock_job(&mut tx, &job_id)
            .await?
            .ok_or(StoreError::Vanished)?;
        debug_assert_eq!(locked.state(&steps)?.steps.len(), state.steps.len());
        self.persist(
            &mut tx,
            &locked,
            &transition,
            &BTreeMap::new(),
            None,
            &StepFacts::default(),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        info!(job_id, correlation_id = %req.correlation_id, vm_id = %req.vm_id, job_type = %req.job_type, "failover accepted");
        Ok(Accepted {
            job_id,
            status: state.status,
        })
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

    /// Renews a lease; false when it is not `worker_id`'s any more.
    pub async fn heartbeat(
        &self,
        job_id: &str,
        step: StepName,
        attempt: u32,
        worker_id: &str,
        progress: u32,
        message: Option<&str>,
    ) -> Result<bool, ServiceError> {
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
        let state = job.state(&steps)?;
        let step_row = steps.iter().find(|s| s.step_name == event.step().as_str());
        if let (Some(reporter), Some(row)) = (reporter, step_row)
            && row.status == StepStatus::Running.as_str()
            && row.attempt as u32 == event.attempt()
            && row.worker_id.as_deref() != Some(reporter)
        {
            return Ok(Verdict::Refused(format!(
                "step {} attempt {} is leased to another worker",
                event.step(),
                event.attempt()
            )));
        }
        if let (Event::LeaseExpired { .. }, Some(row)) = (&event, step_row)
            && row
                .lease_expires_at
                .is_none_or(|until| until > chrono::Utc::now())
        {
            return Ok(Verdict::Refused("the lease was renewed".into()));
        }
        let transition = match orchestration::apply(&state, &event, &self.policy) {
            Ok(t) => t,
            Err(refusal) => return Ok(Verdict::Refused(refusal_text(&refusal))),
        };
        if let Event::LeaseExpired { step, attempt } = &event {
            warn!(job_id, correlation_id = %job.correlation_id, step = %step, attempt, "step lease expired; dispatching it again");
        }
        info!(
            job_id,
            correlation_id = %job.correlation_id,
            step = %event.step(),
            attempt = event.attempt(),
            event = event_name(&event),
            job_status = transition.job_status.as_str(),
            "step event applied"
        );
        self.persist(&mut tx, &job, &transition, &outputs, Some(&event), facts)
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Verdict::Accepted)
    }

    async fn persist(
        &self,
        tx: &mut sqlx::PgConnection,
        job: &super::model::LockedJob,
        transition: &Transition,
        new_outputs: &BTreeMap<String, String>,
        event: Option<&Event>,
        facts: &StepFacts<'_>,
    ) -> Result<(), StoreError> {
        let mut outputs = job.outputs()?;
        outputs.extend(new_outputs.clone());
        for update in &transition.step_updates {
            let is_event_step = event.is_some_and(|e| e.step() == update.step);
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
        store::update_job(
            tx,
            &job.job_id,
            &JobUpdate {
                status: transition.job_status,
                current_step: transition.current_step.map(StepName::as_str),
                outputs: serde_json::to_value(&outputs).map_err(StoreError::corrupt)?,
                destination_vm_id: outputs.get("destination_vm_id").map(String::as_str),
                error,
                mark_started: matches!(event, Some(Event::Claimed { .. })),
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
        for dispatch in &transition.dispatch {
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
                },
            )
            .await?;
        }
        if transition.job_status.is_terminal() && status_changed {
            info!(job_id = %job.job_id, correlation_id = %job.correlation_id, status = transition.job_status.as_str(), "job finished");
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
}

fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Claimed { .. } => "claimed",
        Event::Succeeded { .. } => "succeeded",
        Event::Skipped { .. } => "skipped",
        Event::Failed { .. } => "failed",
        Event::LeaseExpired { .. } => "lease-expired",
    }
}

fn refusal_text(refusal: &Refusal) -> String {
    refusal.to_string()
}
