//! The gateway's Prometheus metrics, served on the REST port at
//! `GET /metrics`. Counters move where the event happens (an accepted job,
//! a transition, a publish, a refused request); the outbox and queue gauges
//! are sampled every timer interval by each replica, so a dashboard takes
//! their `max` across replicas.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use failover_core::effects::MetricEvent;
use failover_platform::metrics as shared;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub job_type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobOutcomeLabels {
    pub job_type: String,
    /// `completed`, `failed` or `cancelled`.
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub job_type: String,
    pub error_code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub step: String,
    /// The event that dispatched the step again: `failed`,
    /// `lease-expired` or `retry-requested`.
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// `write` (starts or changes an operation) or `read`.
    pub class: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A cheap handle on the gateway's metrics.
#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    jobs_started: Family<JobLabels, Counter>,
    jobs_finished: Family<JobOutcomeLabels, Counter>,
    job_failures: Family<FailureLabels, Counter>,
    job_duration: HistogramFamily<JobOutcomeLabels>,
    step_retries: Family<RetryLabels, Counter>,
    lease_expiries: Family<StepLabels, Counter>,
    outbox_backlog: Gauge,
    outbox_delayed: Gauge,
    outbox_oldest_age: Gauge<f64, AtomicU64>,
    outbox_published: Family<StepLabels, Counter>,
    outbox_publish_errors: Counter,
    queue_depth: Family<StepLabels, Gauge>,
    relay_connected: Gauge,
    rate_limit_refusals: Family<LimitLabels, Counter>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(shared::PREFIX);
        let inner = Inner {
            jobs_started: Family::default(),
            jobs_finished: Family::default(),
            job_failures: Family::default(),
            job_duration: Family::new_with_constructor(shared::job_seconds),
            step_retries: Family::default(),
            lease_expiries: Family::default(),
            outbox_backlog: Gauge::default(),
            outbox_delayed: Gauge::default(),
            outbox_oldest_age: Gauge::default(),
            outbox_published: Family::default(),
            outbox_publish_errors: Counter::default(),
            queue_depth: Family::default(),
            relay_connected: Gauge::default(),
            rate_limit_refusals: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "jobs_started",
            "Jobs accepted (test, live and cleanup failovers), by type",
            inner.jobs_started.clone(),
        );
        registry.register(
            "jobs_finished",
            "Jobs that ended, by type and outcome",
            inner.jobs_finished.clone(),
        );
        registry.register(
            "job_failures",
            "Jobs that failed, by type and error code",
            inner.job_failures.clone(),
        );
        registry.register(
            "job_duration_seconds",
            "Time from a job's acceptance to its end, by type and outcome",
            inner.job_duration.clone(),
        );
        registry.register(
            "step_retries",
            "Steps dispatched again, by step and the event that caused it",
            inner.step_retries.clone(),
        );
        registry.register(
            "step_lease_expiries",
            "Step leases that ran out before the worker reported",
            inner.lease_expiries.clone(),
        );
        registry.register(
            "outbox_backlog",
            "Step dispatches due but not yet published to RabbitMQ",
            inner.outbox_backlog.clone(),
        );
        registry.register(
            "outbox_delayed",
            "Step dispatches waiting for their retry backoff",
            inner.outbox_delayed.clone(),
        );
        registry.register(
            "outbox_oldest_age_seconds",
            "How long the oldest due, unpublished dispatch has waited",
            inner.outbox_oldest_age.clone(),
        );
        registry.register(
            "outbox_published",
            "Step dispatches the broker confirmed, by step",
            inner.outbox_published.clone(),
        );
        registry.register(
            "outbox_publish_errors",
            "Publishes the broker refused or that failed",
            inner.outbox_publish_errors.clone(),
        );
        registry.register(
            "queue_depth",
            "Messages ready in each step queue (passive declare)",
            inner.queue_depth.clone(),
        );
        registry.register(
            "relay_connected",
            "1 while this replica's outbox relay is connected to RabbitMQ",
            inner.relay_connected.clone(),
        );
        registry.register(
            "rate_limit_refusals",
            "Requests refused with 429, by class",
            inner.rate_limit_refusals.clone(),
        );
        GatewayMetrics {
            inner: Arc::new(Inner { registry, ..inner }),
        }
    }

    /// The text a scrape gets.
    pub fn render(&self) -> String {
        shared::render(&self.inner.registry)
    }

    pub fn job_started(&self, job_type: &str) {
        self.inner
            .jobs_started
            .get_or_create(&JobLabels {
                job_type: job_type.to_owned(),
            })
            .inc();
    }

    pub fn job_finished(&self, job_type: &str, outcome: &str, seconds: f64) {
        let labels = JobOutcomeLabels {
            job_type: job_type.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.inner.jobs_finished.get_or_create(&labels).inc();
        self.inner
            .job_duration
            .get_or_create(&labels)
            .observe(seconds.max(0.0));
    }

    pub fn job_failed(&self, job_type: &str, error_code: &str) {
        self.inner
            .job_failures
            .get_or_create(&FailureLabels {
                job_type: job_type.to_owned(),
                error_code: error_code.to_owned(),
            })
            .inc();
    }

    pub fn step_redispatched(&self, step: &str, reason: &str) {
        self.inner
            .step_retries
            .get_or_create(&RetryLabels {
                step: step.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn lease_expired(&self, step: &str) {
        self.inner
            .lease_expiries
            .get_or_create(&StepLabels {
                step: step.to_owned(),
            })
            .inc();
    }

    pub fn set_outbox(&self, due: i64, delayed: i64, oldest_age_seconds: f64) {
        self.inner.outbox_backlog.set(due);
        self.inner.outbox_delayed.set(delayed);
        self.inner
            .outbox_oldest_age
            .set(oldest_age_seconds.max(0.0));
    }

    pub fn published(&self, step: &str) {
        self.inner
            .outbox_published
            .get_or_create(&StepLabels {
                step: step.to_owned(),
            })
            .inc();
    }

    /// Counts what a committed decision asked to count.
    pub fn count(&self, event: &MetricEvent) {
        match event {
            MetricEvent::JobStarted { job_type } => self.job_started(job_type.as_str()),
            MetricEvent::JobFinished {
                job_type,
                status,
                seconds,
                error,
            } => {
                self.job_finished(job_type.as_str(), status.as_str(), *seconds);
                if let Some(code) = error {
                    self.job_failed(job_type.as_str(), code.as_str());
                }
            }
            MetricEvent::LeaseExpired { step } => self.lease_expired(step.as_str()),
            MetricEvent::StepRedispatched { step, cause } => {
                self.step_redispatched(step.as_str(), cause.as_str())
            }
        }
    }

    pub fn publish_failed(&self) {
        self.inner.outbox_publish_errors.inc();
    }

    pub fn set_queue_depth(&self, step: &str, ready: u32) {
        self.inner
            .queue_depth
            .get_or_create(&StepLabels {
                step: step.to_owned(),
            })
            .set(i64::from(ready));
    }

    pub fn set_relay_connected(&self, connected: bool) {
        self.inner.relay_connected.set(i64::from(connected));
    }

    pub fn relay_connected(&self) -> bool {
        self.inner.relay_connected.get() == 1
    }

    pub fn rate_limited(&self, write: bool) {
        self.inner
            .rate_limit_refusals
            .get_or_create(&LimitLabels {
                class: if write { "write" } else { "read" }.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family() {
        let metrics = GatewayMetrics::new();
        metrics.job_started("test");
        metrics.job_finished("test", "completed", 12.5);
        metrics.set_queue_depth("snapshot", 3);
        metrics.rate_limited(true);
        metrics.job_failed("live", "VM_CREATE_FAILED");
        let text = metrics.render();
        for line in [
            "failover_jobs_started_total{job_type=\"test\"} 1",
            "failover_jobs_finished_total{job_type=\"test\",outcome=\"completed\"} 1",
            "failover_job_duration_seconds_count{job_type=\"test\",outcome=\"completed\"} 1",
            "failover_queue_depth{step=\"snapshot\"} 3",
            "failover_rate_limit_refusals_total{class=\"write\"} 1",
            "failover_job_failures_total{job_type=\"live\",error_code=\"VM_CREATE_FAILED\"} 1",
            "# TYPE failover_outbox_backlog gauge",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
