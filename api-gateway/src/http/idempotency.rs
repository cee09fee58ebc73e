//! `Idempotency-Key` on the POST endpoints: a repeated request with the same
//! key and body gets the original answer and starts nothing new; the same
//! key with another body is refused. The service records the key, a hash of
//! the request and the job in the job's own transaction; the answer is
//! rendered again here, from the job.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use failover_core::ErrorCode;

use super::AppState;
use super::answers::{
    AcceptedView, accepted_response, answer as accepted_answer, cleanup_answer, operator_answer,
};
use super::error::ApiError;
use crate::db::idempotency::{IdempotencyKey, Remembered};

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// What kind of answer a key stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Start,
    Cleanup,
    Operator(&'static str),
}

/// The key of a request, if it has one: checked, and bound to the endpoint
/// and a hash of the (canonical) body.
pub fn key(
    headers: &HeaderMap,
    endpoint: &str,
    body: &serde_json::Value,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(raw) = headers.get(HEADER) else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            ApiError::invalid("Idempotency-Key must be 1 to 255 visible ASCII characters")
        })?;
    let hash = hex::encode(Sha256::digest(body.to_string().as_bytes()));
    Ok(Some(IdempotencyKey {
        key: key.to_owned(),
        endpoint: endpoint.to_owned(),
        request_hash: hash,
    }))
}

/// The original answer, when a request with `key` was seen before.
pub async fn replay(
    state: &AppState,
    key: Option<&IdempotencyKey>,
    kind: Kind,
) -> Result<Option<Response>, ApiError> {
    let Some(key) = key else {
        return Ok(None);
    };
    match state.service.remembered(key).await? {
        None => Ok(None),
        Some(remembered) => answer(state, key, kind, remembered).await.map(Some),
    }
}

/// The original answer of `remembered`, unless it was for another body.
pub async fn answer(
    state: &AppState,
    key: &IdempotencyKey,
    kind: Kind,
    remembered: Remembered,
) -> Result<Response, ApiError> {
    if remembered.request_hash != key.request_hash {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "Idempotency-Key {:?} was used with a different request body (job {})",
                key.key, remembered.job_id
            ),
        )
        .with_job(remembered.job_id));
    }
    let mut response = match kind {
        Kind::Start => {
            let job = state.service.job_detail(&remembered.job_id).await?;
            accepted_response(
                &remembered.job_id,
                accepted_answer(
                    &AcceptedView::of_job(&job.job),
                    state.settings.gateway.estimated_test_duration,
                ),
            )
        }
        Kind::Cleanup => {
            let job = state.service.job_detail(&remembered.job_id).await?;
            accepted_response(&remembered.job_id, cleanup_answer(&job.job))
        }
        Kind::Operator(action) => {
            let status = StatusCode::from_u16(remembered.response_status as u16)
                .unwrap_or(StatusCode::ACCEPTED);
            let body = operator_answer(
                action,
                &remembered.job_id,
                remembered.outcome.as_deref().unwrap_or_default(),
                remembered.correlation_id,
            );
            (status, Json(body)).into_response()
        }
    };
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_key_is_bound_to_the_body_whatever_its_formatting() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_static("k-1"));
        let a = key(&headers, "/x", &json!({"a": 1, "b": 2}))
            .unwrap()
            .unwrap();
        let b = key(
            &headers,
            "/x",
            &serde_json::from_str(r#"{ "b":2, "a":1 }"#).unwrap(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.request_hash, b.request_hash);
        let c = key(&headers, "/x", &json!({"a": 2})).unwrap().unwrap();
        assert_ne!(a.request_hash, c.request_hash);
        assert!(key(&HeaderMap::new(), "/x", &json!({})).unwrap().is_none());
    }
}
