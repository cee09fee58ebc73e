//! What can go wrong talking to the CloudStack management server.

use std::time::Duration;

use crate::http::HttpSetupError;

/// `errorcode` 431: a bad or missing parameter.
pub const PARAM_ERROR: u16 = 431;
/// `errorcode` 530: internal error.
pub const INTERNAL_ERROR: u16 = 530;
/// `errorcode` 536: resource in use.
pub const RESOURCE_IN_USE_ERROR: u16 = 536;

#[derive(Debug, thiserror::Error)]
pub enum CloudStackError {
    /// The HTTP client could not be built (bad CA bundle, TLS set-up).
    #[error(transparent)]
    Setup(#[from] HttpSetupError),

    /// The connection failed or broke before an answer arrived. The server
    /// may or may not have executed the command.
    #[error("cloudstack {command}: cannot reach the management server: {source}")]
    Transport {
        command: String,
        #[source]
        source: reqwest::Error,
    },

    /// No answer within the request timeout. The server may or may not have
    /// executed the command.
    #[error("cloudstack {command}: no answer within {after:?}")]
    Timeout { command: String, after: Duration },

    /// The server refused the command: HTTP status = `errorcode`.
    #[error(
        "cloudstack {command} failed with HTTP {http_status} (errorcode {error_code}, cserrorcode {}): {error_text}",
        cs_error_code.map_or_else(|| "none".to_owned(), |c| c.to_string())
    )]
    Api {
        command: String,
        http_status: u16,
        error_code: u16,
        cs_error_code: Option<u32>,
        error_text: String,
    },

    /// An answer that does not have the documented shape.
    #[error("cloudstack {command}: cannot decode the answer: {reason}")]
    Decode { command: String, reason: String },

    /// The async job ended with `jobstatus` 2.
    #[error(
        "cloudstack {command}: async job {job_id} failed with errorcode {error_code}: {error_text}"
    )]
    AsyncJobFailed {
        command: String,
        job_id: String,
        error_code: u16,
        error_text: String,
    },

    /// The async job ended with `jobstatus` 3.
    #[error("cloudstack {command}: async job {job_id} was cancelled")]
    AsyncJobCancelled { command: String, job_id: String },

    /// `deployVirtualMachine` found a VM under the request's custom id in a
    /// state it cannot be used from (`Error` after a failed deploy,
    /// `Destroyed`, `Expunging`). A custom id is never free again: destroy
    /// the VM and deploy under a new one.
    #[error("vm {vm_id} exists under the requested custom id but is {state}")]
    DeployedVmUnusable { vm_id: String, state: String },

    /// The async job had not ended when the deadline passed. It may still
    /// finish: look it up again with `queryAsyncJobResult` and `job_id`.
    #[error("cloudstack {command}: async job {job_id} still pending after {deadline:?}")]
    AsyncJobDeadline {
        command: String,
        job_id: String,
        deadline: Duration,
    },
}

impl CloudStackError {
    /// Whether the same request may succeed later: transport errors,
    /// timeouts, HTTP 5xx and 429, and async jobs that outlived the deadline
    /// (they may still finish). A create-type command must not be repeated
    /// on the strength of this alone: look for what it may have created
    /// first (see [`Self::is_ambiguous`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Timeout { .. } | Self::AsyncJobDeadline { .. } => true,
            Self::Api { http_status, .. } => *http_status == 429 || *http_status >= 500,
            _ => false,
        }
    }

    /// Whether the server may have executed the command although the
    /// client saw an error: transport errors, timeouts and HTTP 5xx.
    pub fn is_ambiguous(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Timeout { .. } => true,
            Self::Api { http_status, .. } => *http_status >= 500,
            _ => false,
        }
    }

    /// The CloudStack `errorcode` of a refused command or failed job.
    pub fn error_code(&self) -> Option<u16> {
        match self {
            Self::Api { error_code, .. } | Self::AsyncJobFailed { error_code, .. } => {
                Some(*error_code)
            }
            _ => None,
        }
    }

    /// The server's `errortext`, when there is one.
    pub fn error_text(&self) -> Option<&str> {
        match self {
            Self::Api { error_text, .. } | Self::AsyncJobFailed { error_text, .. } => {
                Some(error_text)
            }
            _ => None,
        }
    }

    /// The async job the error is about, to look it up again later.
    pub fn job_id(&self) -> Option<&str> {
        match self {
            Self::AsyncJobFailed { job_id, .. }
            | Self::AsyncJobCancelled { job_id, .. }
            | Self::AsyncJobDeadline { job_id, .. } => Some(job_id),
            _ => None,
        }
    }

    /// A 431 saying that what was to be created exists already (a reused
    /// `customid`: "UUID: ... already exists so can't create/update with
    /// custom id"; a host name taken in the network: "... already exists in
    /// the network domain ...").
    pub fn is_already_exists(&self) -> bool {
        self.error_code() == Some(PARAM_ERROR)
            && self
                .error_text()
                .is_some_and(|t| t.to_ascii_lowercase().contains("already exists"))
    }

    /// A 431 saying that an id given as a parameter names nothing: the
    /// server translates UUIDs before running a command, so
    /// `listVirtualMachines id=<unknown>` fails like this instead of
    /// answering an empty list.
    pub fn is_entity_not_found(&self) -> bool {
        self.error_code() == Some(PARAM_ERROR)
            && self
                .error_text()
                .is_some_and(|t| t.contains("entity does not exist"))
    }

    /// A 401: bad API key or signature, or an expired request.
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            Self::Api {
                http_status: 401,
                ..
            }
        )
    }
}
