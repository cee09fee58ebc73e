//! The step worker: real clients of the systems a failover drives, and the
//! executors of the failover steps built on them.
//!
//! - [`cloudstack`]: the signed CloudStack query API with async-job polling;
//! - [`linstor`]: the LINSTOR controller's REST v1 API;
//! - [`virt_customize`]: VirtIO driver injection with libguestfs' virt-customize.

pub mod cloudstack;
pub mod http;
pub mod linstor;
pub mod preflight;
pub mod virt_customize;
