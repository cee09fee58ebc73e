//! `ApiCallRc` entries as the controller writes them, and the controller's
//! rule from entries to HTTP status (linstor-server `ApiCallRcRestUtils`):
//! the first error entry decides, not-found codes (300-399) give 404,
//! access codes (400-499) 403, everything else 500; warnings keep the
//! success status.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, Utc};
use serde::Serialize;

const fn signed(bits: u64) -> i64 {
    i64::from_ne_bytes(bits.to_ne_bytes())
}

pub const MASK_ERROR: i64 = signed(0xC000_0000_0000_0000);
pub const MASK_WARN: i64 = signed(0x8000_0000_0000_0000);
const MASK_BITS_OP: i64 = 0x0300_0000;
const MASK_BITS_OBJ: i64 = 0x007C_0000;
const MASK_BITS_CODE: i64 = 0x7FFF;

pub const MASK_CRT: i64 = 0x0100_0000;
pub const MASK_MOD: i64 = 0x0200_0000;
pub const MASK_DEL: i64 = 0x0300_0000;
pub const MASK_SNAPSHOT: i64 = 0x000C_0000;

pub const CREATED: i64 = 1;
pub const DELETED: i64 = 2;
pub const MODIFIED: i64 = 3;

pub const FAIL_INVLD_RSC_NAME: i64 = 202 | MASK_ERROR;
pub const FAIL_INVLD_SNAPSHOT_NAME: i64 = 218 | MASK_ERROR;
pub const FAIL_NOT_FOUND_RSC_DFN: i64 = 301 | MASK_ERROR;
pub const FAIL_NOT_FOUND_RSC: i64 = 302 | MASK_ERROR;
pub const FAIL_NOT_FOUND_SNAPSHOT_DFN: i64 = 313 | MASK_ERROR;
pub const FAIL_NOT_FOUND_SNAPSHOT: i64 = 315 | MASK_ERROR;
pub const FAIL_ACC_DENIED_COMMAND: i64 = 412 | MASK_ERROR;
pub const FAIL_EXISTS_SNAPSHOT_DFN: i64 = 514 | MASK_ERROR;
pub const FAIL_NOT_CONNECTED: i64 = 995 | MASK_ERROR;
pub const FAIL_IN_USE: i64 = 997 | MASK_ERROR;
pub const FAIL_UNKNOWN_ERROR: i64 = 998 | MASK_ERROR;
pub const WARN_NOT_FOUND: i64 = 3000 | MASK_WARN;
pub const API_CALL_PARSE_ERROR: i64 = signed(0x0FFF_FFFF_FFFF_FFFD) | MASK_ERROR;

/// One entry, serialized as the controller does (empty fields left out).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiCallRc {
    pub ret_code: i64,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correction: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_report_ids: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub obj_refs: BTreeMap<String, String>,
    pub created_at: String,
}

impl ApiCallRc {
    pub fn new(ret_code: i64, message: impl Into<String>) -> Self {
        Self {
            ret_code,
            message: message.into(),
            cause: None,
            details: None,
            correction: None,
            error_report_ids: Vec::new(),
            obj_refs: BTreeMap::new(),
            created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, false),
        }
    }

    pub fn with_cause(mut self, cause: impl Into<String>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    pub fn with_correction(mut self, correction: impl Into<String>) -> Self {
        self.correction = Some(correction.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.ret_code & MASK_ERROR == MASK_ERROR
    }

    /// The HTTP status the controller derives from an error entry.
    fn error_status(&self) -> StatusCode {
        match self.ret_code & MASK_BITS_CODE {
            300..=399 => StatusCode::NOT_FOUND,
            400..=499 => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The object and operation a call is about; added to every entry the
/// call answers, as the controller's `ResponseConverter.addContext` does.
#[derive(Debug, Clone)]
pub struct Context {
    op_mask: i64,
    obj_mask: i64,
    obj_refs: BTreeMap<String, String>,
    description: String,
}

impl Context {
    /// A call about snapshot `snap` of resource definition `rd`.
    pub fn snapshot(op_mask: i64, rd: &str, snap: &str) -> Self {
        Self {
            op_mask,
            obj_mask: MASK_SNAPSHOT,
            obj_refs: BTreeMap::from([
                ("RscDfn".to_owned(), rd.to_owned()),
                ("Snapshot".to_owned(), snap.to_owned()),
            ]),
            description: format!("Resource: {rd}, Snapshot: {snap}"),
        }
    }

    pub fn apply(&self, mut entry: ApiCallRc) -> ApiCallRc {
        if entry.ret_code & MASK_BITS_OP == 0 {
            entry.ret_code |= self.op_mask;
        }
        if entry.ret_code & MASK_BITS_OBJ == 0 {
            entry.ret_code |= self.obj_mask;
        }
        entry.details = Some(match entry.details.take() {
            Some(details) => format!("{details}\n{}", self.description),
            None => self.description.clone(),
        });
        for (key, value) in &self.obj_refs {
            entry
                .obj_refs
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
        entry
    }

    pub fn apply_all(&self, entries: Vec<ApiCallRc>) -> Vec<ApiCallRc> {
        entries.into_iter().map(|e| self.apply(e)).collect()
    }
}

/// A JSON array of entries with the status the controller would give it:
/// `success` unless an entry is an error.
pub fn answer(success: StatusCode, entries: Vec<ApiCallRc>) -> Response {
    let status = entries
        .iter()
        .find(|e| e.is_error())
        .map_or(success, ApiCallRc::error_status);
    (status, axum::Json(entries)).into_response()
}

/// A JSON array of entries with a fixed status (parse errors, injected
/// faults, authentication).
pub fn answer_with(status: StatusCode, entries: Vec<ApiCallRc>) -> Response {
    (status, axum::Json(entries)).into_response()
}

/// The controller's answer to a body it cannot parse.
pub fn parse_error(details: impl Into<String>) -> Response {
    answer_with(
        StatusCode::BAD_REQUEST,
        vec![
            ApiCallRc::new(API_CALL_PARSE_ERROR, "Unable to parse input json.")
                .with_details(details),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_first_error_entry() {
        let ok = ApiCallRc::new(CREATED | MASK_CRT | MASK_SNAPSHOT, "created");
        let warn = ApiCallRc::new(WARN_NOT_FOUND, "gone");
        assert_eq!(
            answer(StatusCode::OK, vec![ok.clone(), warn]).status(),
            StatusCode::OK
        );
        let missing = ApiCallRc::new(FAIL_NOT_FOUND_RSC_DFN, "missing");
        assert_eq!(
            answer(StatusCode::CREATED, vec![missing]).status(),
            StatusCode::NOT_FOUND
        );
        let exists = ApiCallRc::new(FAIL_EXISTS_SNAPSHOT_DFN, "exists");
        assert_eq!(
            answer(StatusCode::CREATED, vec![ok, exists]).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let denied = ApiCallRc::new(FAIL_ACC_DENIED_COMMAND, "denied");
        assert_eq!(
            answer(StatusCode::OK, vec![denied]).status(),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn context_adds_masks_but_keeps_existing_ones() {
        let ctx = Context::snapshot(MASK_MOD, "rsc1", "snap1");
        let entry = ctx.apply(ApiCallRc::new(FAIL_IN_USE, "in use"));
        assert_eq!(entry.ret_code, FAIL_IN_USE | MASK_MOD | MASK_SNAPSHOT);
        assert_eq!(entry.obj_refs["RscDfn"], "rsc1");
        let entry = ctx.apply(ApiCallRc::new(WARN_NOT_FOUND | MASK_DEL, "gone"));
        assert_eq!(entry.ret_code & MASK_BITS_OP, MASK_DEL);
    }
}
