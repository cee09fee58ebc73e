//! Framework-free building blocks shared by every process of the failover
//! orchestrator: the pipelines and the pure orchestration rules, the error
//! code table, configuration, telemetry set-up (logs, traces, the metrics
//! exposition) and the CloudStack request signature (used by the worker's
//! client and checked by the simulator).

pub mod cloudstack_signature;
pub mod config;
pub mod error_codes;
pub mod metrics;
pub mod orchestration;
pub mod pipeline;
#[cfg(feature = "amqp")]
pub mod queue;
pub mod telemetry;

pub use config::Settings;
pub use error_codes::ErrorCode;
pub use orchestration::{JobStatus, StepStatus};
pub use pipeline::{JobType, StepName};
