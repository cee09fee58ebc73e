//! `Idempotency-Key` on the POST endpoints: a repeated request with the same
//! key and body gets the original answer and starts nothing new; the same
//! key with another body is refused. The answer of a request that starts a
//! job is stored in the job's own transaction.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use failover_core::ErrorCode;

use super::error::ApiError;
use crate::jobs::service::{FailoverService, IdempotencyKey};
use crate::jobs::store::StoredResponse;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

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

/// The key of a request and, when the request was seen before, its stored
/// answer; errors carry the correlation id.
pub async fn check(
    service: &FailoverService,
    headers: &HeaderMap,
    endpoint: &str,
    body: &serde_json::Value,
    correlation: uuid::Uuid,
) -> Result<(Option<IdempotencyKey>, Option<Response>), ApiError> {
    let key = key(headers, endpoint, body).map_err(|e| e.with_correlation(correlation))?;
    let replayed = match &key {
        Some(key) => replay(service, key)
            .await
            .map_err(|e| e.with_correlation(correlation))?,
        None => None,
    };
    Ok((key, replayed))
}

/// The stored answer for `key`, if the request was seen before.
pub async fn replay(
    service: &FailoverService,
    key: &IdempotencyKey,
) -> Result<Option<Response>, ApiError> {
    match service.idempotent_response(&key.key, &key.endpoint).await? {
        None => Ok(None),
        Some(stored) => stored_answer(key, stored).map(Some),
    }
}

/// The stored answer, unless it was for another body.
pub fn stored_answer(key: &IdempotencyKey, stored: StoredResponse) -> Result<Response, ApiError> {
    if stored.request_hash != key.request_hash {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "Idempotency-Key {:?} was used with a different request body (job {})",
                key.key, stored.job_id
            ),
        )
        .with_job(stored.job_id));
    }
    let status = StatusCode::from_u16(stored.response_status as u16).unwrap_or(StatusCode::OK);
    let mut response = (status, Json(stored.response_body)).into_response();
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
