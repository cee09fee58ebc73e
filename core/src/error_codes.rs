//! The one table of the product's error codes: each code's HTTP status, gRPC
//! status and the troubleshooting text shown to the operator.

use serde::{Deserialize, Serialize};

/// gRPC status codes used by the product (a framework-free mirror of the
/// canonical codes; the transport layer converts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcCode {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    AlreadyExists,
    ResourceExhausted,
    Unavailable,
    Internal,
    Aborted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The VM is not registered in the replicated-VM inventory, or not replicated.
    VmNotFound,
    ValidationFailed,
    SnapshotFailed,
    VirtioFailed,
    VmCreateFailed,
    VolumeAttachFailed,
    VmStartFailed,
    /// A cleanup or compensation step could not undo what a failover did.
    CleanupFailed,
    /// The request is malformed (bad JSON, wrong types, bad values).
    InvalidRequest,
    JobNotFound,
    /// No such endpoint.
    NotFound,
    MethodNotAllowed,
    /// The operation conflicts with the current state (e.g. a job is active).
    Conflict,
    /// The VM has as many unfinished operations as it may have, or a test
    /// failover of it is still up.
    VmBusy,
    /// Too many requests from this client.
    RateLimited,
    /// Postgres or another dependency of the gateway is unreachable.
    ServiceUnavailable,
    InternalError,
}

pub const TROUBLESHOOTING_DOC: &str = "/docs/failover/troubleshooting.md";

impl ErrorCode {
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::VmNotFound,
        ErrorCode::ValidationFailed,
        ErrorCode::SnapshotFailed,
        ErrorCode::VirtioFailed,
        ErrorCode::VmCreateFailed,
        ErrorCode::VolumeAttachFailed,
        ErrorCode::VmStartFailed,
        ErrorCode::CleanupFailed,
        ErrorCode::InvalidRequest,
        ErrorCode::JobNotFound,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::VmBusy,
        ErrorCode::RateLimited,
        ErrorCode::ServiceUnavailable,
        ErrorCode::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::VmNotFound => "VM_NOT_FOUND",
            ErrorCode::ValidationFailed => "VALIDATION_FAILED",
            ErrorCode::SnapshotFailed => "SNAPSHOT_FAILED",
            ErrorCode::VirtioFailed => "VIRTIO_FAILED",
            ErrorCode::VmCreateFailed => "VM_CREATE_FAILED",
            ErrorCode::VolumeAttachFailed => "VOLUME_ATTACH_FAILED",
            ErrorCode::VmStartFailed => "VM_START_FAILED",
            ErrorCode::CleanupFailed => "CLEANUP_FAILED",
            ErrorCode::VmBusy => "VM_BUSY",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::JobNotFound => "JOB_NOT_FOUND",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// Status of a synchronous HTTP answer carrying this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::VmNotFound | ErrorCode::JobNotFound | ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::InvalidRequest => 400,
            ErrorCode::ValidationFailed => 422,
            ErrorCode::Conflict | ErrorCode::VmBusy => 409,
            ErrorCode::RateLimited => 429,
            ErrorCode::ServiceUnavailable => 503,
            ErrorCode::SnapshotFailed
            | ErrorCode::VirtioFailed
            | ErrorCode::VmCreateFailed
            | ErrorCode::VolumeAttachFailed
            | ErrorCode::VmStartFailed
            | ErrorCode::CleanupFailed
            | ErrorCode::InternalError => 500,
        }
    }

    pub fn grpc_code(self) -> GrpcCode {
        match self {
            ErrorCode::VmNotFound | ErrorCode::JobNotFound | ErrorCode::NotFound => {
                GrpcCode::NotFound
            }
            ErrorCode::InvalidRequest | ErrorCode::MethodNotAllowed => GrpcCode::InvalidArgument,
            ErrorCode::ValidationFailed => GrpcCode::FailedPrecondition,
            ErrorCode::Conflict | ErrorCode::VmBusy => GrpcCode::Aborted,
            ErrorCode::RateLimited => GrpcCode::ResourceExhausted,
            ErrorCode::ServiceUnavailable => GrpcCode::Unavailable,
            ErrorCode::SnapshotFailed
            | ErrorCode::VirtioFailed
            | ErrorCode::VmCreateFailed
            | ErrorCode::VolumeAttachFailed
            | ErrorCode::VmStartFailed
            | ErrorCode::CleanupFailed
            | ErrorCode::InternalError => GrpcCode::Internal,
        }
    }

    /// What the operator should look at first.
    pub fn suggestions(self) -> &'static [&'static str] {
        match self {
            ErrorCode::VmNotFound => &[
                "Check VM replication status",
                "Verify the VMware VM UUID (not the VM name) is registered: GET /api/v1/vms/{vm_id}",
            ],
            ErrorCode::ValidationFailed => &[
                "Check the validation details on the job's validation step",
                "Verify CloudStack connectivity and that the mapped networks exist",
                "Verify the LINSTOR resource definitions of every disk exist",
            ],
            ErrorCode::SnapshotFailed => &[
                "Check Linstor connectivity",
                "Verify the resource definition supports snapshots (thin LVM or ZFS storage pool)",
            ],
            ErrorCode::VirtioFailed => &[
                "Check driver availability: the virtio-win ISO must support this Windows version",
                "Check the step log for virt-customize's output",
                "Verify the boot disk's device path on the worker host",
            ],
            ErrorCode::VmCreateFailed => &[
                "Check CloudStack config: zone, template, service offering and networks",
                "Check CloudStack capacity in the zone",
            ],
            ErrorCode::VolumeAttachFailed => &[
                "Check Volume Daemon and CloudStack volume state",
                "Verify the volumes are not attached to another VM",
            ],
            ErrorCode::VmStartFailed => &[
                "Check the destination VM in CloudStack and its host capacity",
                "Verify the boot volume is attached as the root disk",
            ],
            ErrorCode::CleanupFailed => &[
                "The job lists the resources it left behind and why",
                "Fix the cause, then retry the job: POST /api/v1/failover/jobs/{job_id}/retry",
            ],
            ErrorCode::VmBusy => &[
                "Wait for the VM's active operation to finish; the error names it",
                "A test failover holds its VM until its cleanup finishes: POST /api/v1/failover/jobs/{job_id}/cleanup",
            ],
            ErrorCode::RateLimited => &[
                "Wait for the time given in the Retry-After header",
                "Poll job status with GET, which is limited separately",
            ],
            ErrorCode::InvalidRequest => &[
                "Check the request body against the API reference",
                "vm_id must be the VMware VM UUID; test_duration looks like \"30m\" or \"2h\"",
            ],
            ErrorCode::JobNotFound => {
                &["Check the job id; list jobs with GET /api/v1/failover/jobs"]
            }
            ErrorCode::NotFound => &["Check the endpoint path against the API reference"],
            ErrorCode::MethodNotAllowed => &["Check the HTTP method against the API reference"],
            ErrorCode::Conflict => &["Wait for the active operation to finish, or inspect it"],
            ErrorCode::ServiceUnavailable => &[
                "The orchestrator's database is unreachable; retry shortly",
                "Check the gateway's readiness endpoint",
            ],
            ErrorCode::InternalError => &[
                "Retry the request",
                "Search the gateway logs for the correlation_id",
            ],
        }
    }

    pub fn documentation(self) -> &'static str {
        TROUBLESHOOTING_DOC
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_codes_have_the_reference_names() {
        for (code, name) in [
            (ErrorCode::VmNotFound, "VM_NOT_FOUND"),
            (ErrorCode::ValidationFailed, "VALIDATION_FAILED"),
            (ErrorCode::SnapshotFailed, "SNAPSHOT_FAILED"),
            (ErrorCode::VirtioFailed, "VIRTIO_FAILED"),
            (ErrorCode::VmCreateFailed, "VM_CREATE_FAILED"),
            (ErrorCode::VolumeAttachFailed, "VOLUME_ATTACH_FAILED"),
        ] {
            assert_eq!(code.as_str(), name);
            assert_eq!(ErrorCode::parse(name), Some(code));
            assert_eq!(serde_json::to_value(code).unwrap(), name);
        }
    }

    #[test]
    fn every_code_round_trips_and_has_help() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert!(!code.suggestions().is_empty());
            assert!((400..600).contains(&code.http_status()));
        }
        assert_eq!(ErrorCode::VmNotFound.http_status(), 404);
        assert_eq!(ErrorCode::InvalidRequest.http_status(), 400);
        assert_eq!(ErrorCode::ServiceUnavailable.http_status(), 503);
    }
}
