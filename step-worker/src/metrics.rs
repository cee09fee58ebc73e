//! The worker's Prometheus metrics, served with its health endpoints
//! ([`crate::runtime::status`]): steps in flight and their outcomes and
//! durations, claims, the broker connection, and every call to CloudStack,
//! LINSTOR and virt-customize ([`CallMetrics`], shared by the clients).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use failover_platform::metrics as shared;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepOutcomeLabels {
    pub step: String,
    /// `succeeded`, `skipped`, `failed`, or `lease_lost`.
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimLabels {
    pub step: String,
    /// `granted`, `refused`, `unknown_job` or `error`.
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `cloudstack`, `linstor` or `virt-customize`.
    pub system: String,
    /// The CloudStack command, the LINSTOR operation, virt-customize's action.
    pub command: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallErrorLabels {
    pub system: String,
    pub command: String,
    /// `timeout`, `transport`, `status_4xx`, `status_5xx` or `failed`.
    pub kind: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency and errors of the calls to one external system, recorded by its
/// client. Cheap to clone; a default one counts into a registry of its own.
#[derive(Debug, Clone)]
pub struct CallMetrics {
    duration: HistogramFamily<CallLabels>,
    errors: Family<CallErrorLabels, Counter>,
}

impl Default for CallMetrics {
    fn default() -> Self {
        CallMetrics {
            duration: Family::new_with_constructor(shared::call_seconds),
            errors: Family::default(),
        }
    }
}

impl CallMetrics {
    /// Records one call: how long it took and, when it failed, how.
    pub fn observe(
        &self,
        system: &str,
        command: &str,
        elapsed: Duration,
        error_kind: Option<&str>,
    ) {
        self.duration
            .get_or_create(&CallLabels {
                system: system.to_owned(),
                command: command.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
        if let Some(kind) = error_kind {
            self.errors
                .get_or_create(&CallErrorLabels {
                    system: system.to_owned(),
                    command: command.to_owned(),
                    kind: kind.to_owned(),
                })
                .inc();
        }
    }

    /// The error kind of an HTTP answer's status, `None` for a success.
    pub fn status_kind(status: u16) -> Option<&'static str> {
        match status {
            400..=499 => Some("status_4xx"),
            500.. => Some("status_5xx"),
            _ => None,
        }
    }
}

/// A cheap handle on one worker's metrics.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    in_flight: Gauge,
    steps: Family<StepOutcomeLabels, Counter>,
    step_duration: HistogramFamily<StepOutcomeLabels>,
    claims: Family<ClaimLabels, Counter>,
    broker_connected: Gauge,
    calls: CallMetrics,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(shared::PREFIX);
        let inner = Inner {
            in_flight: Gauge::default(),
            steps: Family::default(),
            step_duration: Family::new_with_constructor(shared::step_seconds),
            claims: Family::default(),
            broker_connected: Gauge::default(),
            calls: CallMetrics::default(),
            registry: Registry::default(),
        };
        registry.register(
            "worker_steps_in_flight",
            "Steps this worker is executing now",
            inner.in_flight.clone(),
        );
        registry.register(
            "worker_steps",
            "Step attempts this worker finished, by step and outcome",
            inner.steps.clone(),
        );
        registry.register(
            "worker_step_duration_seconds",
            "How long one step attempt ran on this worker, by step and outcome",
            inner.step_duration.clone(),
        );
        registry.register(
            "worker_claims",
            "Claims this worker asked the gateway for, by step and answer",
            inner.claims.clone(),
        );
        registry.register(
            "worker_broker_connected",
            "1 while this worker consumes from RabbitMQ",
            inner.broker_connected.clone(),
        );
        registry.register(
            "external_call_duration_seconds",
            "Calls to CloudStack, LINSTOR and virt-customize, by system and command",
            inner.calls.duration.clone(),
        );
        registry.register(
            "external_call_errors",
            "Failed calls to CloudStack, LINSTOR and virt-customize, by system, command and kind",
            inner.calls.errors.clone(),
        );
        WorkerMetrics {
            inner: Arc::new(Inner { registry, ..inner }),
        }
    }

    /// The text a scrape gets.
    pub fn render(&self) -> String {
        shared::render(&self.inner.registry)
    }

    /// The handle the clients record their calls with.
    pub fn calls(&self) -> CallMetrics {
        self.inner.calls.clone()
    }

    /// Counts a step as running until the guard is dropped.
    pub fn step_started(&self) -> InFlight {
        self.inner.in_flight.inc();
        InFlight {
            gauge: self.inner.in_flight.clone(),
        }
    }

    pub fn step_finished(&self, step: &str, outcome: &str, elapsed: Duration) {
        let labels = StepOutcomeLabels {
            step: step.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.inner.steps.get_or_create(&labels).inc();
        self.inner
            .step_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn claim(&self, step: &str, outcome: &str) {
        self.inner
            .claims
            .get_or_create(&ClaimLabels {
                step: step.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn set_broker_connected(&self, connected: bool) {
        self.inner.broker_connected.set(i64::from(connected));
    }

    pub fn broker_connected(&self) -> bool {
        self.inner.broker_connected.get() == 1
    }
}

/// A step counted in flight; dropping it counts it out.
#[derive(Debug)]
pub struct InFlight {
    gauge: Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_recorded_by_a_client_show_in_the_workers_exposition() {
        let metrics = WorkerMetrics::new();
        let calls = metrics.calls();
        calls.observe(
            "cloudstack",
            "deployVirtualMachine",
            Duration::from_millis(40),
            None,
        );
        calls.observe(
            "linstor",
            "snapshot-create",
            Duration::from_millis(5),
            Some("status_5xx"),
        );
        let in_flight = metrics.step_started();
        let text = metrics.render();
        assert!(text.contains("failover_worker_steps_in_flight 1"), "{text}");
        drop(in_flight);
        let text = metrics.render();
        for line in [
            "failover_worker_steps_in_flight 0",
            "failover_external_call_duration_seconds_count{system=\"cloudstack\",command=\"deployVirtualMachine\"} 1",
            "failover_external_call_errors_total{system=\"linstor\",command=\"snapshot-create\",kind=\"status_5xx\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
