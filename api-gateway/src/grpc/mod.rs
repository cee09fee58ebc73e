//! gRPC services: step coordination for workers, job status for dashboards.
//! Conversions to and from the protobuf messages live in [`convert`].

mod convert;
mod coordination;
mod status;
mod watch;

pub use coordination::StepCoordinationService;
pub use status::JobStatusService;

use failover_core::error_codes::{ErrorCode, GrpcCode};
use tonic::Status;

use crate::service::ServiceError;

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

/// The status of a service error, by the error's one code; internals stay
/// in the log.
pub fn to_status(err: ServiceError) -> Status {
    let error_code = err.code();
    if error_code == ErrorCode::InternalError {
        tracing::error!(error = %err, "grpc call failed");
    }
    Status::new(
        code(error_code),
        format!("{error_code}: {}", err.public_message()),
    )
}

pub fn invalid(message: impl Into<String>) -> Status {
    Status::new(
        code(ErrorCode::InvalidRequest),
        format!("{}: {}", ErrorCode::InvalidRequest, message.into()),
    )
}
