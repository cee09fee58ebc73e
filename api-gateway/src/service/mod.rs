//! The failover service: thin over the rules. Every operation loads what
//! its decision needs in one read, asks `failover_core` for the decision,
//! and writes the decision's effects with [`crate::db::apply`] in the same
//! transaction; the metrics move after the commit. Commands about existing
//! jobs are decided in batches (`batch`). Split by concern: [`admission`]
//! (starting failovers and cleanups, the auto-cleanup timer),
//! [`coordination`] (the worker protocol and the lease timer), [`operator`]
//! (cancel and retry), [`queries`] (what the API reads).

pub mod admission;
mod batch;
pub mod coordination;
mod error;
mod lanes;
pub mod operator;
pub mod queries;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use failover_core::effects::Effects;
use failover_core::job::Placement;
use failover_core::orchestration::RetryPolicy;
use failover_core::rules::{Refusal, Rules};
use failover_platform::Settings;

pub use error::ServiceError;

use crate::db::idempotency::Remembered;
use crate::metrics::GatewayMetrics;
use crate::relay::Dispatches;

#[derive(Debug, Clone)]
pub struct FailoverService {
    pool: PgPool,
    rules: Arc<Rules>,
    metrics: GatewayMetrics,
    /// Decides commands about existing jobs, in batches.
    batcher: batch::Batcher,
    /// Decides admissions, in batches.
    admissions: lanes::Lanes<admission::Admission>,
    /// The relay's fast path: dispatches committed now.
    dispatches: Dispatches,
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

impl<T> Verdict<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Verdict<U> {
        match self {
            Verdict::Accepted(t) => Verdict::Accepted(f(t)),
            Verdict::Refused(r) => Verdict::Refused(r),
            Verdict::UnknownJob => Verdict::UnknownJob,
            Verdict::Replayed(r) => Verdict::Replayed(r),
        }
    }
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
    /// The service; its batch lanes run on the current Tokio runtime.
    pub fn new(
        pool: PgPool,
        rules: Rules,
        metrics: GatewayMetrics,
        dispatches: Dispatches,
    ) -> Self {
        let rules = Arc::new(rules);
        FailoverService {
            admissions: admission::Admitter {
                pool: pool.clone(),
                rules: rules.clone(),
                metrics: metrics.clone(),
                dispatches: dispatches.clone(),
            }
            .start(),
            batcher: batch::Batcher::start(
                pool.clone(),
                rules.clone(),
                metrics.clone(),
                dispatches.clone(),
            ),
            pool,
            rules,
            metrics,
            dispatches,
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

    /// Counts what committed.
    fn counted(&self, effects: &Effects) {
        for event in &effects.metrics {
            self.metrics.count(event);
        }
    }
}
