//! Every request gets a correlation id: an incoming `X-Request-ID` that is a
//! UUID is honoured, otherwise a new UUID v4. It is put in a tracing span
//! around the request (so every log line carries it), returned as
//! `X-Request-ID`, and filled into error envelopes. The span is the
//! request's server span: an incoming W3C `traceparent` makes it part of the
//! caller's trace, and a failover the request starts continues that trace.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;
use uuid::Uuid;

use failover_platform::telemetry::propagation;

use super::error::ApiError;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorrelationId(pub Uuid);

pub async fn assign(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
        .unwrap_or_else(Uuid::new_v4);
    req.extensions_mut().insert(CorrelationId(id));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{} {}", req.method(), route.as_deref().unwrap_or("unmatched")),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        correlation_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        http.request.method = %req.method(),
        http.route = route,
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
        job_id = tracing::field::Empty,
        vm_id = tracing::field::Empty,
    );
    let headers = req.headers();
    propagation::continue_trace(&span, |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let mut response = next.run(req).instrument(span.clone()).await;
    // An error envelope built without the id (a rejection, a 404) gets it now.
    if let Some(err) = response.extensions().get::<ApiError>().cloned()
        && err.correlation_id.is_none()
    {
        let headers = response.headers().clone();
        response = err.with_correlation(id).into_response();
        for (name, value) in &headers {
            if name != axum::http::header::CONTENT_LENGTH {
                response.headers_mut().insert(name.clone(), value.clone());
            }
        }
    }
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    span.in_scope(|| {
        tracing::info!(status = response.status().as_u16(), "request finished");
    });
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}
