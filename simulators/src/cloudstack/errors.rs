//! The errors the simulated server answers, with the codes and texts of the
//! real one (`ApiErrorCode`, `CSExceptionErrorCode`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// `cserrorcode` of `InvalidParameterValueException`.
const CS_INVALID_PARAMETER: u32 = 4350;
/// `cserrorcode` of `ResourceInUseException`.
const CS_RESOURCE_IN_USE: u32 = 4375;
/// `cserrorcode` of `CloudRuntimeException`.
const CS_CLOUD_RUNTIME: u32 = 4250;
/// `cserrorcode` of a bare `ServerApiException`.
const CS_SERVER_API: u32 = 9999;

pub const AUTH_TEXT: &str = "unable to verify user credentials and/or request signature";

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub cs_code: Option<u32>,
    pub text: String,
}

impl ApiError {
    /// 431, an `InvalidParameterValueException`.
    pub fn param(text: impl Into<String>) -> Self {
        Self {
            code: 431,
            cs_code: Some(CS_INVALID_PARAMETER),
            text: text.into(),
        }
    }

    /// 431 for a required parameter that is missing.
    pub fn missing(command: &str, param: &str) -> Self {
        Self {
            code: 431,
            cs_code: Some(CS_SERVER_API),
            text: format!(
                "Unable to execute API command {} due to missing parameter {param}",
                command.to_ascii_lowercase()
            ),
        }
    }

    /// 431 for an id that names nothing (UUID translation failed).
    pub fn invalid_id(command: &str, param: &str, value: &str) -> Self {
        Self {
            code: 431,
            cs_code: Some(CS_SERVER_API),
            text: format!(
                "Unable to execute API command {} due to invalid value. Invalid parameter {param} value={value} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.",
                command.to_ascii_lowercase()
            ),
        }
    }

    /// 536, a `ResourceInUseException`.
    pub fn in_use(text: impl Into<String>) -> Self {
        Self {
            code: 536,
            cs_code: Some(CS_RESOURCE_IN_USE),
            text: text.into(),
        }
    }

    /// 530, an internal error.
    pub fn internal(text: impl Into<String>) -> Self {
        Self {
            code: 530,
            cs_code: Some(CS_CLOUD_RUNTIME),
            text: text.into(),
        }
    }

    /// 401: unknown key, bad signature, expired request.
    pub fn unauthorized() -> Self {
        Self {
            code: 401,
            cs_code: None,
            text: AUTH_TEXT.to_owned(),
        }
    }

    /// 432 for a command that does not exist.
    pub fn unsupported() -> Self {
        Self {
            code: 432,
            cs_code: Some(CS_SERVER_API),
            text: "The given command does not exist or it is not available for user".to_owned(),
        }
    }

    /// An injected failure with `status` (530 unless the rule says).
    pub fn injected(status: u16) -> Self {
        let text = match status {
            429 => "The given command has reached its rate limit, please try again later",
            _ => "Internal error executing command, please contact your system administrator",
        };
        Self {
            code: status,
            cs_code: (status == 530).then_some(CS_CLOUD_RUNTIME),
            text: text.to_owned(),
        }
    }

    /// The body under `response_name`: `{"uuidList":[],"errorcode":..,
    /// "cserrorcode":..,"errortext":..}` (`cserrorcode` only when known).
    pub fn body(&self, response_name: &str) -> Value {
        let mut inner = json!({
            "uuidList": [],
            "errorcode": self.code,
            "errortext": self.text,
        });
        if let Some(cs) = self.cs_code {
            inner["cserrorcode"] = json!(cs);
        }
        json!({ response_name: inner })
    }

    /// The `jobresult` of an async job that failed with this error.
    pub fn job_result(&self) -> Value {
        json!({ "errorcode": self.code, "errortext": self.text })
    }

    pub fn into_response(self, response_name: &str) -> Response {
        json_response(
            StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &self.body(response_name),
        )
    }
}

/// A JSON answer with the server's content type.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json; charset=UTF-8",
        )],
        body.to_string(),
    )
        .into_response()
}
