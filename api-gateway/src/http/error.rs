//! The documented error envelope:
//! `{success:false, error, error_code, details{step, vm_id, correlation_id}, troubleshooting{suggestions, documentation}}`.
//! 5xx answers never carry internals; the full error goes to the log with
//! the correlation id.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use uuid::Uuid;

use failover_core::ErrorCode;

use crate::db::StoreError;
use crate::jobs::service::ServiceError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub step: Option<String>,
    pub vm_id: Option<String>,
    pub job_id: Option<String>,
    pub correlation_id: Option<Uuid>,
    /// Extra facts for the caller (every validation problem, say).
    pub problems: Vec<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            step: None,
            vm_id: None,
            job_id: None,
            correlation_id: None,
            problems: Vec::new(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn with_vm(mut self, vm_id: impl ToString) -> Self {
        self.vm_id = Some(vm_id.to_string());
        self
    }

    pub fn with_job(mut self, job_id: impl Into<String>) -> Self {
        self.job_id = Some(job_id.into());
        self
    }

    pub fn with_problems(mut self, problems: Vec<String>) -> Self {
        self.problems = problems;
        self
    }

    pub fn with_correlation(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = Some(correlation_id);
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn body(&self) -> serde_json::Value {
        let mut details = json!({
            "error_code": self.code.as_str(),
            "step": self.step,
            "vm_id": self.vm_id,
            "correlation_id": self.correlation_id,
        });
        if let Some(job_id) = &self.job_id {
            details["job_id"] = json!(job_id);
        }
        if !self.problems.is_empty() {
            details["problems"] = json!(self.problems);
        }
        json!({
            "success": false,
            "error": self.message,
            "error_code": self.code.as_str(),
            "details": details,
            "troubleshooting": {
                "suggestions": self.code.suggestions(),
                "documentation": self.code.documentation(),
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(self.body())).into_response();
        // The correlation middleware fills in the id it assigned.
        response.extensions_mut().insert(self);
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        if err.is_unavailable() {
            tracing::error!(error = %err, "database unavailable");
            ApiError::new(
                ErrorCode::ServiceUnavailable,
                "The orchestrator's database is unavailable; the request was not accepted",
            )
        } else {
            tracing::error!(error = %err, "database error");
            ApiError::new(ErrorCode::InternalError, "Internal error")
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::VmNotFound { vm_id, reason } => {
                ApiError::new(ErrorCode::VmNotFound, reason).with_vm(vm_id)
            }
            ServiceError::JobNotFound(job_id) => {
                ApiError::new(ErrorCode::JobNotFound, format!("Job {job_id} not found"))
                    .with_job(job_id)
            }
            ServiceError::VmBusy {
                message,
                active_job,
            } => ApiError::new(ErrorCode::VmBusy, message).with_job(active_job),
            ServiceError::Conflict { message, job_id } => {
                ApiError::new(ErrorCode::Conflict, message).with_job(job_id)
            }
            ServiceError::Store(store) => store.into(),
        }
    }
}
