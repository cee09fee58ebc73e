//! Request extractors that answer malformed input with the documented
//! envelope (400), never axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::correlation::CorrelationId;
use super::error::ApiError;

/// A JSON body parsed into `T`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let correlation = req.extensions().get::<CorrelationId>().copied();
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            let err = match r {
                BytesRejection::FailedToBufferBody(ref e)
                    if e.to_string().contains("length limit") =>
                {
                    ApiError::invalid("Request body is too large")
                }
                other => ApiError::invalid(format!("Cannot read request body: {other}")),
            };
            with_correlation(err, correlation)
        })?;
        if bytes.is_empty() {
            return Err(with_correlation(
                ApiError::invalid("Request body must be a JSON object"),
                correlation,
            ));
        }
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            with_correlation(
                ApiError::invalid(format!("Invalid request body: {e}")),
                correlation,
            )
        })
    }
}

/// Query parameters parsed into `T`.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let correlation = parts.extensions.get::<CorrelationId>().copied();
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|r: QueryRejection| {
                with_correlation(
                    ApiError::invalid(format!("Invalid query parameters: {}", r.body_text())),
                    correlation,
                )
            })
    }
}

fn with_correlation(err: ApiError, correlation: Option<CorrelationId>) -> ApiError {
    match correlation {
        Some(c) => err.with_correlation(c.0),
        None => err,
    }
}
