//! The LINSTOR controller's REST v1 API, as the failover steps use it:
//! crash-consistent snapshots of replicated disks before a failover,
//! rollback on cleanup.
//!
//! Calls are synchronous on the controller side (they return when the
//! satellites are done), so the request timeout is minutes long and there
//! is nothing to poll. Transport failures, timeouts and transient 5xx
//! answers are retried with backoff; every call is safe to repeat:
//! creating a snapshot that exists checks the existing one
//! ([`LinstorClient::create_snapshot`]), deleting one that is gone is a
//! success.

mod api_call_rc;
mod client;
mod error;
mod model;
mod names;

pub use api_call_rc::{
    ApiCallRc, ApiErrorKind, MASK_BITS_CODE, MASK_BITS_TYPE, MASK_ERROR, MASK_INFO, MASK_WARN,
    Severity, codes,
};
pub use client::{CreatedSnapshot, LinstorClient};
pub use error::LinstorError;
pub use model::{
    ControllerVersion, FLAG_SUCCESSFUL, ResourceDefinition, Snapshot, SnapshotCreation,
    SnapshotDeletion, SnapshotNode, SnapshotVolumeDefinition, VolumeDefinition,
};
pub use names::{MAX_NAME_LEN, MIN_NAME_LEN, NameError, NameKind, validate_name};
