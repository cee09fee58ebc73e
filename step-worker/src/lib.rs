//! The step worker: real clients of the systems a failover drives, the
//! executors of the failover steps built on them, and the process that
//! consumes step tasks from RabbitMQ.
//!
//! - [`cloudstack`]: the signed CloudStack query API with async-job polling;
//! - [`linstor`]: the LINSTOR controller's REST v1 API;
//! - [`virt_customize`]: VirtIO driver injection with libguestfs' virt-customize;
//! - [`steps`]: one executor per step kind;
//! - [`runtime`]: consume, claim, heartbeat, report; metrics and health
//!   over HTTP ([`metrics`]).

pub mod cloudstack;
pub mod http;
pub mod linstor;
pub mod metrics;
pub mod preflight;
pub mod runtime;
pub mod steps;
pub mod virt_customize;
