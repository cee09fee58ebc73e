//! What every process of the failover orchestrator runs on, and nothing of
//! its rules: configuration (one figment chain, validated once), logs and
//! OpenTelemetry traces, the Prometheus exposition, the RabbitMQ topology
//! of step dispatch, and the CloudStack request signature (used by the
//! worker's client and checked by the simulator). The rules live in
//! `failover-core`, which depends on none of this.

pub mod cloudstack_signature;
pub mod config;
pub mod metrics;
#[cfg(feature = "amqp")]
pub mod queue;
pub mod telemetry;

pub use config::Settings;
