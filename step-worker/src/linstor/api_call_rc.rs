//! LINSTOR's `ApiCallRc`: the answer to every mutating call and every
//! error, a JSON array of entries whose `ret_code` packs the severity, the
//! operation, the object type and a code (linstor-server `ApiConsts`).
//!
//! Bit layout of `ret_code` (an int64):
//! - bits 62-63, severity: `0b11` error, `0b10` warning, `0b01` info,
//!   `0b00` success. Warnings have the sign bit set too, so "negative"
//!   does not mean "error";
//! - bits 24-25, operation (create, modify, delete);
//! - bits 18-22, object type (resource definition, snapshot, ...);
//! - bits 0-14, the code itself (`ret_code & 0x7FFF`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The severity bits (`MASK_BITS_TYPE`).
pub const MASK_BITS_TYPE: u64 = 0xC000_0000_0000_0000;
/// Severity "error" (`MASK_ERROR`).
pub const MASK_ERROR: u64 = 0xC000_0000_0000_0000;
/// Severity "warning" (`MASK_WARN`).
pub const MASK_WARN: u64 = 0x8000_0000_0000_0000;
/// Severity "info" (`MASK_INFO`).
pub const MASK_INFO: u64 = 0x4000_0000_0000_0000;
/// The code bits (`MASK_BITS_CODE`).
pub const MASK_BITS_CODE: u64 = 0x7FFF;

/// Codes (low bits) this client gives a meaning to.
pub mod codes {
    pub const FAIL_INVLD_RSC_NAME: u32 = 202;
    pub const FAIL_INVLD_SNAPSHOT_NAME: u32 = 218;
    pub const FAIL_NOT_FOUND_RSC_DFN: u32 = 301;
    pub const FAIL_NOT_FOUND_RSC: u32 = 302;
    pub const FAIL_NOT_FOUND_SNAPSHOT_DFN: u32 = 313;
    pub const FAIL_NOT_FOUND_SNAPSHOT: u32 = 315;
    pub const FAIL_EXISTS_SNAPSHOT_DFN: u32 = 514;
    pub const FAIL_EXISTS_SNAPSHOT: u32 = 516;
    pub const FAIL_RSC_BUSY: u32 = 992;
    pub const FAIL_SNAPSHOTS_NOT_SUPPORTED: u32 = 994;
    pub const FAIL_NOT_CONNECTED: u32 = 995;
    pub const FAIL_IN_USE: u32 = 997;
    pub const FAIL_UNKNOWN_ERROR: u32 = 998;
    /// A warning: deleting something that is already gone.
    pub const WARN_NOT_FOUND: u32 = 3000;
}

/// One entry of an `ApiCallRc` array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCallRc {
    pub ret_code: i64,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_report_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub obj_refs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// The severity encoded in the two top bits of `ret_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
    Info,
    Success,
}

/// What an error code means to a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// 301: the resource definition does not exist.
    ResourceDefinitionNotFound,
    /// 313 (snapshot definition, from rollback and delete) or 315 (the
    /// snapshot GET endpoint).
    SnapshotNotFound,
    /// 514/516: a snapshot of that name exists. The rollback endpoint uses
    /// 514 as well when newer snapshots than the target exist.
    SnapshotExists,
    /// 994: the storage under the resource cannot take snapshots.
    SnapshotsNotSupported,
    /// 995: a satellite is not connected (transient).
    NotConnected,
    /// 997: the resource is in use (attached, mounted).
    InUse,
    /// 202/218: the controller refused a name.
    InvalidName,
    /// 400-499: access denied (also the 401 answer of token auth).
    AccessDenied,
    /// Any other code, by its low bits.
    Other(u32),
}

impl ApiCallRc {
    fn bits(&self) -> u64 {
        u64::from_ne_bytes(self.ret_code.to_ne_bytes())
    }

    pub fn severity(&self) -> Severity {
        match self.bits() & MASK_BITS_TYPE {
            MASK_ERROR => Severity::Error,
            MASK_WARN => Severity::Warning,
            MASK_INFO => Severity::Info,
            _ => Severity::Success,
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }

    pub fn is_warning(&self) -> bool {
        self.severity() == Severity::Warning
    }

    /// The code without severity, operation and object bits.
    pub fn code_low_bits(&self) -> u32 {
        u32::try_from(self.bits() & MASK_BITS_CODE).unwrap_or_default()
    }

    /// The meaning of this entry's code (meaningful for error entries).
    pub fn kind(&self) -> ApiErrorKind {
        kind_of(self.code_low_bits())
    }

    /// A warning that the object was not found (an idempotent delete).
    pub fn is_warn_not_found(&self) -> bool {
        self.is_warning() && self.code_low_bits() == codes::WARN_NOT_FOUND
    }
}

fn kind_of(code: u32) -> ApiErrorKind {
    match code {
        codes::FAIL_NOT_FOUND_RSC_DFN => ApiErrorKind::ResourceDefinitionNotFound,
        codes::FAIL_NOT_FOUND_SNAPSHOT_DFN | codes::FAIL_NOT_FOUND_SNAPSHOT => {
            ApiErrorKind::SnapshotNotFound
        }
        codes::FAIL_EXISTS_SNAPSHOT_DFN | codes::FAIL_EXISTS_SNAPSHOT => {
            ApiErrorKind::SnapshotExists
        }
        codes::FAIL_SNAPSHOTS_NOT_SUPPORTED => ApiErrorKind::SnapshotsNotSupported,
        codes::FAIL_NOT_CONNECTED => ApiErrorKind::NotConnected,
        codes::FAIL_IN_USE => ApiErrorKind::InUse,
        codes::FAIL_INVLD_RSC_NAME | codes::FAIL_INVLD_SNAPSHOT_NAME => ApiErrorKind::InvalidName,
        400..=499 => ApiErrorKind::AccessDenied,
        other => ApiErrorKind::Other(other),
    }
}

impl ApiErrorKind {
    /// Whether an error of this kind may go away by itself, so a retry of
    /// the same call can succeed: satellites reconnecting, a busy
    /// resource, database or unknown failures. Semantic answers (invalid,
    /// not found, access, exists, missing, in use, unsupported) never do.
    pub fn is_transient(self) -> bool {
        match self {
            ApiErrorKind::NotConnected => true,
            ApiErrorKind::Other(code) => {
                matches!(code, 100..=199)
                    || code == codes::FAIL_RSC_BUSY
                    || code == codes::FAIL_UNKNOWN_ERROR
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(ret_code: u64) -> ApiCallRc {
        ApiCallRc {
            ret_code: i64::from_ne_bytes(ret_code.to_ne_bytes()),
            message: String::new(),
            cause: None,
            details: None,
            correction: None,
            error_report_ids: Vec::new(),
            obj_refs: BTreeMap::new(),
            created_at: None,
        }
    }

    #[test]
    fn severity_comes_from_the_two_top_bits() {
        // FAIL_IN_USE with the modify and snapshot masks, as the rollback answers.
        let in_use = rc(MASK_ERROR | 0x0200_0000 | 0x000C_0000 | 997);
        assert!(in_use.ret_code < 0);
        assert_eq!(in_use.severity(), Severity::Error);
        assert_eq!(in_use.code_low_bits(), 997);
        assert_eq!(in_use.kind(), ApiErrorKind::InUse);

        // WARN_NOT_FOUND is negative as an i64 but only a warning.
        let gone = rc(MASK_WARN | 0x0300_0000 | 0x000C_0000 | 3000);
        assert!(gone.ret_code < 0);
        assert!(!gone.is_error());
        assert!(gone.is_warn_not_found());

        assert_eq!(rc(0x010C_0001).severity(), Severity::Success);
        assert_eq!(rc(MASK_INFO | 10_000).severity(), Severity::Info);
    }

    #[test]
    fn kinds_and_transience() {
        assert_eq!(kind_of(313), ApiErrorKind::SnapshotNotFound);
        assert_eq!(kind_of(315), ApiErrorKind::SnapshotNotFound);
        assert_eq!(kind_of(516), ApiErrorKind::SnapshotExists);
        assert_eq!(kind_of(412), ApiErrorKind::AccessDenied);
        assert!(kind_of(995).is_transient());
        assert!(!kind_of(997).is_transient());
        assert!(!kind_of(514).is_transient());
        assert!(kind_of(100).is_transient());
    }

    #[test]
    fn decodes_a_controller_array() {
        let body = r#"[{"ret_code":-4611686018393046043,"message":"Resource 'rsc1' on node 'n1' is still in use.",
            "cause":"Resource is mounted/in use.","obj_refs":{"RscDfn":"rsc1"},"created_at":"2025-01-02T03:04:05.678+00:00"}]"#;
        let entries: Vec<ApiCallRc> = serde_json::from_str(body).unwrap();
        assert_eq!(entries[0].obj_refs["RscDfn"], "rsc1");
        assert!(entries[0].is_error());
    }
}
