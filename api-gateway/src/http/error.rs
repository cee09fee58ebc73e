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

use crate::service::ServiceError;

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
    /// Suggestions of this answer before the code's own.
    pub hints: Vec<String>,
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
            hints: Vec::new(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// Every problem of a request, in one 400.
    pub fn problems(what: &str, problems: Vec<String>) -> Self {
        Self::invalid(format!("{what}: {}", problems.join("; "))).with_problems(problems)
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

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
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
        let suggestions: Vec<&str> = self
            .hints
            .iter()
            .map(String::as_str)
            .chain(self.code.suggestions().iter().copied())
            .collect();
        json!({
            "success": false,
            "error": self.message,
            "error_code": self.code.as_str(),
            "details": details,
            "troubleshooting": {
                "suggestions": suggestions,
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

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        let code = err.code();
        match code {
            ErrorCode::ServiceUnavailable => tracing::error!(error = %err, "database unavailable"),
            ErrorCode::InternalError => tracing::error!(error = %err, "request failed"),
            _ => {}
        }
        let mut api = ApiError::new(code, err.public_message());
        if let Some(vm_id) = err.vm_id() {
            api = api.with_vm(vm_id);
        }
        if let Some(job_id) = err.job_id() {
            api = api.with_job(job_id);
        }
        if let ServiceError::VmBusy { active_job, .. } = &err {
            api = api.with_hint(format!(
                "Inspect the active job: GET /api/v1/failover/jobs/{active_job}; a test failover that is up is cleaned up with POST /api/v1/failover/jobs/{active_job}/cleanup"
            ));
        }
        api
    }
}
