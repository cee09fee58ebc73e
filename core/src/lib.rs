//! The failover orchestrator's rules, as pure functions: the pipelines of
//! the API reference, the job state machine, and every decision the gateway
//! makes — admitting a failover or a cleanup ([`admission`]), claims,
//! heartbeats, reports and expired leases ([`coordination`]), an operator's
//! cancel and retry ([`operator`]), and the VM a finished job releases
//! ([`holds`]). Each decision is one value of [`effects::Effects`] (rows to
//! write, audit entries, steps to dispatch, metric events) that the gateway
//! applies in one transaction. Nothing here does I/O or reads a clock: the
//! caller passes the time in.

pub mod admission;
pub mod coordination;
pub mod effects;
pub mod error_codes;
pub mod holds;
pub mod inventory;
pub mod job;
pub mod lifecycle;
pub mod operator;
pub mod orchestration;
pub mod pipeline;
pub mod rules;

pub use error_codes::ErrorCode;
pub use orchestration::{JobStatus, StepStatus};
pub use pipeline::{JobType, StepName};
