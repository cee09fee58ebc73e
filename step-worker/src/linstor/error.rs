//! What can go wrong talking to the LINSTOR controller.

use std::time::Duration;

use super::api_call_rc::{ApiCallRc, ApiErrorKind};
use super::names::NameError;
use crate::http::HttpSetupError;

#[derive(Debug, thiserror::Error)]
pub enum LinstorError {
    /// The client could not be built (bad CA bundle, TLS setup).
    #[error(transparent)]
    Setup(#[from] HttpSetupError),

    /// The configured bearer token cannot be sent in an HTTP header.
    #[error("linstor.bearer_token contains characters not allowed in an HTTP header")]
    BadBearerToken,

    /// A resource definition or snapshot name LINSTOR would refuse; the
    /// call was not sent.
    #[error(transparent)]
    InvalidName(#[from] NameError),

    /// The controller answered with error entries (an `ApiCallRc` array).
    #[error("linstor answered HTTP {http_status}: {}", summary(entries))]
    Api {
        http_status: u16,
        entries: Vec<ApiCallRc>,
    },

    /// An error status whose body is not an `ApiCallRc` array (a proxy in
    /// front of the controller, a crashed controller).
    #[error("linstor answered HTTP {http_status} with an unexpected body: {body}")]
    UnexpectedResponse { http_status: u16, body: String },

    /// The connection failed or broke before an answer arrived.
    #[error("cannot reach linstor: {0}")]
    Transport(#[source] reqwest::Error),

    /// No answer within the configured request timeout.
    #[error("linstor did not answer within {0:?}")]
    Timeout(Duration),

    /// A success answer that does not have the documented shape.
    #[error("cannot decode the linstor answer to {path}: {message}")]
    Decode { path: String, message: String },

    /// A snapshot of the requested name exists but is not usable: still
    /// being taken by an earlier attempt (retryable), or failed (flags
    /// `FAILED_*`, or being deleted).
    #[error("snapshot {snapshot:?} of {resource:?} exists but is not successful (flags {flags:?})")]
    SnapshotNotSuccessful {
        resource: String,
        snapshot: String,
        flags: Vec<String>,
    },
}

fn summary(entries: &[ApiCallRc]) -> String {
    let Some(entry) = entries
        .iter()
        .find(|e| e.is_error())
        .or_else(|| entries.first())
    else {
        return "no details".to_owned();
    };
    format!("{} (code {})", entry.message, entry.code_low_bits())
}

impl LinstorError {
    /// The first error entry of an API error.
    pub fn first_error(&self) -> Option<&ApiCallRc> {
        match self {
            LinstorError::Api { entries, .. } => entries.iter().find(|e| e.is_error()),
            _ => None,
        }
    }

    /// The meaning of the first error entry of an API error.
    pub fn api_kind(&self) -> Option<ApiErrorKind> {
        self.first_error().map(ApiCallRc::kind)
    }

    /// The code (`ret_code & 0x7FFF`) of the first error entry.
    pub fn code_low_bits(&self) -> Option<u32> {
        self.first_error().map(ApiCallRc::code_low_bits)
    }

    /// The HTTP status of an answer the controller gave, if any.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            LinstorError::Api { http_status, .. }
            | LinstorError::UnexpectedResponse { http_status, .. } => Some(*http_status),
            _ => None,
        }
    }

    /// Whether repeating the same call may succeed: transport failures,
    /// timeouts, 429, 5xx answers that do not carry a semantic error
    /// (exists, in use, not found, invalid, ...), a snapshot an earlier
    /// attempt is still taking.
    pub fn is_retryable(&self) -> bool {
        match self {
            LinstorError::Transport(_) | LinstorError::Timeout(_) => true,
            LinstorError::UnexpectedResponse { http_status, .. } => {
                *http_status == 429 || *http_status >= 500
            }
            LinstorError::Api {
                http_status,
                entries,
            } => {
                if *http_status == 429 {
                    return true;
                }
                if *http_status < 500 {
                    return false;
                }
                match entries.iter().find(|e| e.is_error()) {
                    Some(entry) => entry.kind().is_transient(),
                    None => true,
                }
            }
            LinstorError::SnapshotNotSuccessful { flags, .. } => {
                !super::model::flags_say_failed(flags)
            }
            LinstorError::Setup(_)
            | LinstorError::BadBearerToken
            | LinstorError::InvalidName(_)
            | LinstorError::Decode { .. } => false,
        }
    }
}
