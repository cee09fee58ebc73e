//! gRPC services: step coordination for workers, job status for dashboards.

mod coordination;
mod status;
mod watch;

pub use coordination::StepCoordinationService;
pub use status::JobStatusService;

use failover_core::error_codes::{ErrorCode, GrpcCode};
use tonic::Status;

use crate::jobs::service::ServiceError;

fn code(code: ErrorCode) -> tonic::Code {
    match code.grpc_code() {
        GrpcCode::InvalidArgument => tonic::Code::InvalidArgument,
        GrpcCode::NotFound => tonic::Code::NotFound,
        GrpcCode::FailedPrecondition => tonic::Code::FailedPrecondition,
        GrpcCode::AlreadyExists => tonic::Code::AlreadyExists,
        GrpcCode::ResourceExhausted => tonic::Code::ResourceExhausted,
        GrpcCode::Unavailable => tonic::Code::Unavailable,
        GrpcCode::Internal => tonic::Code::Internal,
        GrpcCode::Aborted => tonic::Code::Aborted,
    }
}

/// The status of a service error; internals stay in the log.
pub fn status(err: ServiceError) -> Status {
    let error_code = match &err {
        ServiceError::VmNotFound { .. } => ErrorCode::VmNotFound,
        ServiceError::JobNotFound(_) => ErrorCode::JobNotFound,
        ServiceError::VmBusy { .. } => ErrorCode::VmBusy,
        ServiceError::Conflict { .. } => ErrorCode::Conflict,
        ServiceError::Store(store) if store.is_unavailable() => ErrorCode::ServiceUnavailable,
        ServiceError::Store(_) => ErrorCode::InternalError,
    };
    let message = match error_code {
        ErrorCode::InternalError => {
            tracing::error!(error = %err, "grpc call failed");
            "internal error".to_owned()
        }
        _ => err.to_string(),
    };
    Status::new(code(error_code), format!("{error_code}: {message}"))
}

pub fn invalid(message: impl Into<String>) -> Status {
    Status::new(
        code(ErrorCode::InvalidRequest),
        format!("{}: {}", ErrorCode::InvalidRequest, message.into()),
    )
}
