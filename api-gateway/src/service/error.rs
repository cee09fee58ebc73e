//! The service's errors, each with its one code: REST and gRPC both ask
//! the error for it ([`ServiceError::code`]) and map the code by the table
//! in `failover_core::error_codes`.

use uuid::Uuid;

use failover_core::ErrorCode;
use failover_core::admission::AdmissionRefusal;

use crate::db::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{reason}")]
    VmNotFound { vm_id: Uuid, reason: String },
    #[error("job {0} not found")]
    JobNotFound(String),
    /// The VM has too many unfinished operations, or a test failover of it is up.
    #[error("{message}")]
    VmBusy { message: String, active_job: String },
    /// The request does not apply to the job (or VM) in its current state.
    #[error("{message}")]
    Conflict {
        message: String,
        job_id: Option<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError {
    /// The error code of the product's one table.
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::VmNotFound { .. } => ErrorCode::VmNotFound,
            ServiceError::JobNotFound(_) => ErrorCode::JobNotFound,
            ServiceError::VmBusy { .. } => ErrorCode::VmBusy,
            ServiceError::Conflict { .. } => ErrorCode::Conflict,
            ServiceError::Store(store) if store.is_unavailable() => ErrorCode::ServiceUnavailable,
            ServiceError::Store(_) => ErrorCode::InternalError,
        }
    }

    /// The job the error is about, when there is one.
    pub fn job_id(&self) -> Option<&str> {
        match self {
            ServiceError::JobNotFound(id) => Some(id),
            ServiceError::VmBusy { active_job, .. } => Some(active_job),
            ServiceError::Conflict { job_id, .. } => job_id.as_deref(),
            _ => None,
        }
    }

    /// The VM the error is about, when there is one.
    pub fn vm_id(&self) -> Option<Uuid> {
        match self {
            ServiceError::VmNotFound { vm_id, .. } => Some(*vm_id),
            _ => None,
        }
    }

    /// What the caller is told: internals stay in the log.
    pub fn public_message(&self) -> String {
        match self.code() {
            ErrorCode::ServiceUnavailable => {
                "The orchestrator's database is unavailable; the request was not accepted".into()
            }
            ErrorCode::InternalError => "Internal error".into(),
            _ => self.to_string(),
        }
    }

    /// The same error again, for another caller that shared the work.
    pub fn again(&self) -> ServiceError {
        match self {
            ServiceError::VmNotFound { vm_id, reason } => ServiceError::VmNotFound {
                vm_id: *vm_id,
                reason: reason.clone(),
            },
            ServiceError::JobNotFound(id) => ServiceError::JobNotFound(id.clone()),
            ServiceError::VmBusy {
                message,
                active_job,
            } => ServiceError::VmBusy {
                message: message.clone(),
                active_job: active_job.clone(),
            },
            ServiceError::Conflict { message, job_id } => ServiceError::Conflict {
                message: message.clone(),
                job_id: job_id.clone(),
            },
            ServiceError::Store(store) => ServiceError::Store(store.again()),
        }
    }

    pub(crate) fn conflict(message: impl Into<String>, job_id: impl Into<String>) -> Self {
        ServiceError::Conflict {
            message: message.into(),
            job_id: Some(job_id.into()),
        }
    }
}

impl From<AdmissionRefusal> for ServiceError {
    fn from(refusal: AdmissionRefusal) -> Self {
        let message = refusal.to_string();
        match refusal {
            AdmissionRefusal::VmNotFound { vm_id }
            | AdmissionRefusal::NotReplicated { vm_id, .. } => ServiceError::VmNotFound {
                vm_id,
                reason: message,
            },
            AdmissionRefusal::TestFailoverUp { job_id, .. } => ServiceError::VmBusy {
                message,
                active_job: job_id,
            },
            AdmissionRefusal::TooManyOperations { oldest, .. } => ServiceError::VmBusy {
                message,
                active_job: oldest,
            },
            AdmissionRefusal::JobNotFound(job_id) => ServiceError::JobNotFound(job_id),
            AdmissionRefusal::NotCleanable { job_id, .. } => {
                ServiceError::conflict(message, job_id)
            }
            AdmissionRefusal::NoFreeJobId => ServiceError::Conflict {
                message,
                job_id: None,
            },
        }
    }
}
