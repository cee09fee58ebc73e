//! The failover orchestrator's rules, as pure functions: the pipelines of
//! the API reference, the job state machine, and every decision the gateway
//! makes — admitting a failover, starting a cleanup, claims, heartbeats,
//! reports, expired leases, operator commands and timers. Each decision is a
//! value of effects (rows to write, audit entries, steps to dispatch,
//! metric events) that the gateway applies in one transaction. Nothing here
//! does I/O or reads a clock: the caller passes the time in.

pub mod error_codes;
pub mod orchestration;
pub mod pipeline;

pub use error_codes::ErrorCode;
pub use orchestration::{JobStatus, StepStatus};
pub use pipeline::{JobType, StepName};
