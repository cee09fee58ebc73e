//! The CloudStack management-server client: the signed query API
//! (`/client/api`, signature version 3, HMAC-SHA1), typed calls, async jobs
//! polled to their end, and retries that never repeat a create blindly.
//!
//! - [`client`]: signing, sending, retrying ([`CloudStackClient::call`]);
//! - [`jobs`]: `queryAsyncJobResult` polling;
//! - [`catalog`], [`vms`], [`volumes`]: the typed calls;
//! - [`wire`]: the envelope and error shapes ([`decode_response`]);
//! - [`types`], [`error`]: what the calls return.

pub mod catalog;
pub mod client;
pub mod error;
pub mod jobs;
pub mod types;
pub mod vms;
pub mod volumes;
pub mod wire;

pub use client::CloudStackClient;
pub use error::CloudStackError;
pub use types::{
    AsyncJob, DeployVmRequest, JobStatus, Network, Nic, ServiceOffering, Snapshot, Template,
    VirtualMachine, VmFilter, VmSnapshot, VmState, Volume, VolumeFilter, VolumeType, Zone,
};
pub use wire::{Params, decode_entity, decode_list, decode_response};
