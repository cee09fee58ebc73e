//! What can go wrong before a job's outcome is known. Every error exits 3.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("configuration: {0}")]
    Config(String),
    /// The API could not be reached, or its answer could not be read.
    #[error("{0}")]
    Connection(String),
    /// The API answered with its error envelope.
    #[error("{} ({})", .0.error, .0.error_code)]
    Api(Box<ApiFailure>),
    /// The status stream could not be opened or broke for good.
    #[error("{0}")]
    Stream(String),
}

/// The documented error envelope:
/// `{success:false, error, error_code, details, troubleshooting{suggestions, documentation}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiFailure {
    #[serde(skip)]
    pub http_status: u16,
    pub error: String,
    pub error_code: String,
    #[serde(default)]
    pub details: Value,
    #[serde(default)]
    pub troubleshooting: Troubleshooting,
    /// The answer as received, for `--output json`.
    #[serde(skip)]
    pub body: Value,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Troubleshooting {
    #[serde(default)]
    pub suggestions: Vec<String>,
    #[serde(default)]
    pub documentation: Option<String>,
}

impl ApiFailure {
    /// The envelope of an answer with HTTP `status`, if it is one.
    pub fn parse(http_status: u16, body: &Value) -> Option<ApiFailure> {
        let mut failure: ApiFailure = serde_json::from_value(body.clone()).ok()?;
        failure.http_status = http_status;
        failure.body = body.clone();
        Some(failure)
    }

    /// The envelope for a person: the message, the code, the ids to quote,
    /// every problem and the suggestions.
    pub fn render(&self) -> String {
        let mut out = format!(
            "error: {} ({}, HTTP {})\n",
            self.error, self.error_code, self.http_status
        );
        for key in ["job_id", "vm_id", "step", "correlation_id"] {
            if let Some(value) = self.details.get(key).and_then(Value::as_str) {
                out.push_str(&format!("  {key}: {value}\n"));
            }
        }
        let problems = self.details["problems"].as_array().into_iter().flatten();
        for (i, problem) in problems.filter_map(Value::as_str).enumerate() {
            if i == 0 {
                out.push_str("  problems:\n");
            }
            out.push_str(&format!("    - {problem}\n"));
        }
        if !self.troubleshooting.suggestions.is_empty() {
            out.push_str("  suggestions:\n");
            for suggestion in &self.troubleshooting.suggestions {
                out.push_str(&format!("    - {suggestion}\n"));
            }
        }
        if let Some(doc) = &self.troubleshooting.documentation {
            out.push_str(&format!("  documentation: {doc}\n"));
        }
        out
    }
}

impl Error {
    /// The error for a person, on stderr.
    pub fn render(&self) -> String {
        match self {
            Error::Api(failure) => failure.render(),
            other => format!("error: {other}\n"),
        }
    }
}

/// An error with its causes, `outer: inner: innermost`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_envelope_is_shown_with_problems_and_suggestions() {
        let body = json!({
            "success": false,
            "error": "Invalid request: vm_id \"x\" is not a VMware VM UUID",
            "error_code": "INVALID_REQUEST",
            "details": {"error_code": "INVALID_REQUEST", "step": null, "vm_id": null,
                        "correlation_id": "8d38bf26-0000-4000-8000-000000000000",
                        "problems": ["vm_id \"x\" is not a VMware VM UUID"]},
            "troubleshooting": {"suggestions": ["Check the request body"], "documentation": "/docs/failover/troubleshooting.md"}
        });
        let failure = ApiFailure::parse(400, &body).unwrap();
        assert_eq!(failure.error_code, "INVALID_REQUEST");
        let text = failure.render();
        assert!(
            text.starts_with("error: Invalid request: vm_id \"x\" is not a VMware VM UUID (INVALID_REQUEST, HTTP 400)\n"),
            "{text}"
        );
        assert!(text.contains("  correlation_id: 8d38bf26-0000-4000-8000-000000000000\n"));
        assert!(text.contains("  problems:\n    - vm_id \"x\" is not a VMware VM UUID\n"));
        assert!(text.contains("  suggestions:\n    - Check the request body\n"));
        assert!(text.contains("  documentation: /docs/failover/troubleshooting.md\n"));
        assert!(!text.contains("step:"), "null details are left out: {text}");
    }

    #[test]
    fn other_json_is_not_an_envelope() {
        assert!(ApiFailure::parse(502, &json!({"message": "bad gateway"})).is_none());
        assert!(ApiFailure::parse(502, &json!("text")).is_none());
    }
}
