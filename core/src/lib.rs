//! Framework-free building blocks shared by every process of the failover
//! orchestrator: configuration, telemetry set-up and the CloudStack request
//! signature (used by the worker's client and checked by the simulator).

pub mod cloudstack_signature;
pub mod config;
pub mod telemetry;

pub use config::Settings;
