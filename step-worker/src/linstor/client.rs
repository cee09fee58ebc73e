//! [`LinstorClient`]: one method per REST call, each retried with backoff
//! while its error is retryable.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use backon::Retryable;
use failover_platform::config::LinstorSettings;
use failover_platform::telemetry::propagation;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;
use url::Url;

use super::api_call_rc::{ApiCallRc, ApiErrorKind};
use super::error::LinstorError;
use super::model::{
    ControllerVersion, ResourceDefinition, Snapshot, SnapshotCreation, SnapshotDeletion,
};
use super::names::{NameKind, validate_name};
use crate::http::{backoff, build_client};
use crate::metrics::CallMetrics;

const BODY_SNIPPET: usize = 512;

/// A client of one LINSTOR controller.
#[derive(Clone)]
pub struct LinstorClient {
    http: reqwest::Client,
    endpoint: Url,
    /// `Bearer <token>`, marked sensitive so it never shows in logs.
    authorization: Option<HeaderValue>,
    request_timeout: Duration,
    retry_initial: Duration,
    retry_max: Duration,
    max_retries: u32,
    calls: CallMetrics,
}

impl fmt::Debug for LinstorClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinstorClient")
            .field("endpoint", &self.endpoint.as_str())
            .field(
                "bearer_token",
                &self.authorization.as_ref().map(|_| "[redacted]"),
            )
            .field("request_timeout", &self.request_timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

/// A snapshot that exists and is successful after
/// [`LinstorClient::create_snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSnapshot {
    pub outcome: SnapshotCreation,
    pub snapshot: Snapshot,
}

/// A decoded answer: its status and body.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl LinstorClient {
    pub fn new(settings: &LinstorSettings) -> Result<Self, LinstorError> {
        let http = build_client(settings.request_timeout, settings.ca_cert_path.as_deref())?;
        let authorization = match &settings.bearer_token {
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                    .map_err(|_| LinstorError::BadBearerToken)?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Self {
            http,
            endpoint: settings.endpoint.clone(),
            authorization,
            request_timeout: settings.request_timeout,
            retry_initial: settings.retry_initial_backoff,
            retry_max: settings.retry_max_backoff,
            max_retries: settings.max_retries,
            calls: CallMetrics::default(),
        })
    }

    /// Records every request's latency and failures into `calls`.
    pub fn with_call_metrics(mut self, calls: CallMetrics) -> Self {
        self.calls = calls;
        self
    }

    /// The controller's REST base URL.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// `GET /v1/controller/version`.
    pub async fn controller_version(&self) -> Result<ControllerVersion, LinstorError> {
        self.retrying("controller-version", || {
            self.fetch("controller-version", &["controller", "version"], &[])
        })
        .await
    }

    /// `GET /v1/resource-definitions?with_volume_definitions=true`.
    pub async fn list_resource_definitions(&self) -> Result<Vec<ResourceDefinition>, LinstorError> {
        self.retrying("resource-definition-list", || {
            self.fetch(
                "resource-definition-list",
                &["resource-definitions"],
                &[("with_volume_definitions", "true")],
            )
        })
        .await
    }

    /// `GET /v1/resource-definitions/{rd}` (served by the controller
    /// although LINBIT's document omits it; no volume definitions).
    pub async fn get_resource_definition(
        &self,
        rd: &str,
    ) -> Result<ResourceDefinition, LinstorError> {
        validate_name(NameKind::ResourceDefinition, rd)?;
        let segments = ["resource-definitions", rd];
        self.retrying("resource-definition-get", || {
            self.fetch("resource-definition-get", &segments, &[])
        })
        .await
    }

    /// `GET /v1/resource-definitions/{rd}/snapshots/{snap}`.
    pub async fn get_snapshot(&self, rd: &str, snap: &str) -> Result<Snapshot, LinstorError> {
        validate_name(NameKind::ResourceDefinition, rd)?;
        validate_name(NameKind::Snapshot, snap)?;
        self.retrying("snapshot-get", || self.fetch_snapshot(rd, snap))
            .await
    }

    /// `GET /v1/resource-definitions/{rd}/snapshots`.
    pub async fn list_snapshots(&self, rd: &str) -> Result<Vec<Snapshot>, LinstorError> {
        validate_name(NameKind::ResourceDefinition, rd)?;
        let segments = ["resource-definitions", rd, "snapshots"];
        self.retrying("snapshot-list", || {
            self.fetch("snapshot-list", &segments, &[])
        })
        .await
    }

    /// `POST /v1/resource-definitions/{rd}/snapshots` with `{"name": snap}`,
    /// safe to repeat: when the controller answers "already exists" (514 or
    /// 516, HTTP 500) the existing snapshot is read and accepted if it is
    /// `SUCCESSFUL`; one still being taken or failed is
    /// [`LinstorError::SnapshotNotSuccessful`] (retryable only while no
    /// failure flag is set).
    pub async fn create_snapshot(
        &self,
        rd: &str,
        snap: &str,
    ) -> Result<CreatedSnapshot, LinstorError> {
        validate_name(NameKind::ResourceDefinition, rd)?;
        validate_name(NameKind::Snapshot, snap)?;
        let (outcome, existing) = self
            .retrying("snapshot-create", || self.try_create_snapshot(rd, snap))
            .await?;
        let snapshot = match existing {
            Some(snapshot) => snapshot,
            None => {
                self.retrying("snapshot-get", || self.fetch_snapshot(rd, snap))
                    .await?
            }
        };
        if !snapshot.is_successful() {
            return Err(not_successful(rd, snap, snapshot));
        }
        Ok(CreatedSnapshot { outcome, snapshot })
    }

    /// `DELETE /v1/resource-definitions/{rd}/snapshots/{snap}`; a snapshot
    /// that is already gone (`WARN_NOT_FOUND`, HTTP 200) is a success.
    pub async fn delete_snapshot(
        &self,
        rd: &str,
        snap: &str,
    ) -> Result<SnapshotDeletion, LinstorError> {
        validate_name(NameKind::ResourceDefinition, rd)?;
        validate_name(NameKind::Snapshot, snap)?;
        let segments = ["resource-definitions", rd, "snapshots", snap];
        let entries = self
            .retrying("snapshot-delete", || {
                self.mutate("snapshot-delete", Method::DELETE, &segments, None)
            })
            .await?;
        if entries.iter().any(ApiCallRc::is_warn_not_found) {
            return Ok(SnapshotDeletion::AlreadyAbsent);
        }
        Ok(SnapshotDeletion::Deleted)
    }

    /// `POST /v1/resource-definitions/{rd}/snapshot-rollback/{snap}`: the
    /// resource goes back to the snapshot's content. Refused with
    /// [`ApiErrorKind::InUse`] while the resource is in use, and (as
    /// [`ApiErrorKind::SnapshotExists`]) when newer snapshots exist on
    /// controllers that only roll back to the most recent one.
    pub async fn rollback_snapshot(
        &self,
        rd: &str,
        snap: &str,
    ) -> Result<Vec<ApiCallRc>, LinstorError> {
        validate_name(NameKind::ResourceDefinition, rd)?;
        validate_name(NameKind::Snapshot, snap)?;
        let segments = ["resource-definitions", rd, "snapshot-rollback", snap];
        let body = serde_json::json!({});
        self.retrying("snapshot-rollback", || {
            self.mutate("snapshot-rollback", Method::POST, &segments, Some(&body))
        })
        .await
    }

    async fn try_create_snapshot(
        &self,
        rd: &str,
        snap: &str,
    ) -> Result<(SnapshotCreation, Option<Snapshot>), LinstorError> {
        let body = serde_json::json!({ "name": snap });
        let created = self
            .mutate(
                "snapshot-create",
                Method::POST,
                &["resource-definitions", rd, "snapshots"],
                Some(&body),
            )
            .await;
        match created {
            Ok(_) => Ok((SnapshotCreation::Created, None)),
            Err(err) if err.api_kind() == Some(ApiErrorKind::SnapshotExists) => {
                let existing = self.fetch_snapshot(rd, snap).await?;
                if !existing.is_successful() {
                    return Err(not_successful(rd, snap, existing));
                }
                tracing::info!(
                    resource = rd,
                    snapshot = snap,
                    "linstor snapshot already present"
                );
                Ok((SnapshotCreation::AlreadyPresent, Some(existing)))
            }
            Err(err) => Err(err),
        }
    }

    async fn fetch_snapshot(&self, rd: &str, snap: &str) -> Result<Snapshot, LinstorError> {
        self.fetch(
            "snapshot-get",
            &["resource-definitions", rd, "snapshots", snap],
            &[],
        )
        .await
    }

    /// Runs `call` (named `operation` in logs) until it succeeds, fails with a non-retryable error or
    /// the retries are used up.
    async fn retrying<T, F, Fut>(&self, operation: &'static str, call: F) -> Result<T, LinstorError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, LinstorError>>,
    {
        call.retry(backoff(
            self.retry_initial,
            self.retry_max,
            self.max_retries,
        ))
        .when(LinstorError::is_retryable)
        .notify(|err, delay| {
            let retry_in_ms = delay.as_millis() as u64;
            tracing::warn!(operation, error = %err, retry_in_ms, "linstor call failed, retrying");
        })
        .await
    }

    /// A GET answering an object or array of `T`.
    async fn fetch<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, LinstorError> {
        let url = self.url(segments, query);
        let answer = self.send(operation, Method::GET, url.clone(), None).await?;
        if !answer.status.is_success() {
            return Err(error_from(answer));
        }
        serde_json::from_slice(&answer.body).map_err(|err| LinstorError::Decode {
            path: url.path().to_owned(),
            message: err.to_string(),
        })
    }

    /// A mutating call answering an `ApiCallRc` array.
    async fn mutate(
        &self,
        operation: &'static str,
        method: Method,
        segments: &[&str],
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<ApiCallRc>, LinstorError> {
        let url = self.url(segments, &[]);
        let answer = self.send(operation, method, url.clone(), body).await?;
        if !answer.status.is_success() {
            return Err(error_from(answer));
        }
        let entries: Vec<ApiCallRc> =
            serde_json::from_slice(&answer.body).map_err(|err| LinstorError::Decode {
                path: url.path().to_owned(),
                message: err.to_string(),
            })?;
        if entries.iter().any(ApiCallRc::is_error) {
            return Err(LinstorError::Api {
                http_status: answer.status.as_u16(),
                entries,
            });
        }
        Ok(entries)
    }

    /// One request, as a client span in the current trace whose context
    /// goes along in the `traceparent` header; its latency and failure are
    /// recorded under `operation`.
    async fn send(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, LinstorError> {
        let span = tracing::info_span!(
            "linstor.call",
            otel.name = %format!("linstor {operation}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            peer.service = "linstor",
            linstor.operation = operation,
            http.request.method = %method,
            server.address = url.host_str(),
            url.path = url.path(),
            http.response.status_code = tracing::field::Empty,
        );
        let started = Instant::now();
        let answer = self
            .send_in(&span, method, url, body)
            .instrument(span.clone())
            .await;
        let error_kind = match &answer {
            Ok(answer) => CallMetrics::status_kind(answer.status.as_u16()),
            Err(LinstorError::Timeout(_)) => Some("timeout"),
            Err(_) => Some("transport"),
        };
        self.calls
            .observe("linstor", operation, started.elapsed(), error_kind);
        if error_kind.is_some() {
            span.record("otel.status_code", "ERROR");
        }
        answer
    }

    async fn send_in(
        &self,
        span: &tracing::Span,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, LinstorError> {
        let path = url.path().to_owned();
        let mut request = self
            .http
            .request(method.clone(), url)
            .header(ACCEPT, "application/json");
        for (name, value) in propagation::headers(span) {
            request = request.header(name, value);
        }
        if let Some(value) = &self.authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = Instant::now();
        let result = match request.send().await {
            Ok(response) => {
                let status = response.status();
                response.bytes().await.map(|body| Answer {
                    status,
                    body: body.to_vec(),
                })
            }
            Err(err) => Err(err),
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(answer) => {
                let status = answer.status.as_u16();
                span.record("http.response.status_code", status);
                if method == Method::GET {
                    tracing::debug!(%method, path, status, elapsed_ms, "linstor call");
                } else {
                    tracing::info!(%method, path, status, elapsed_ms, "linstor call");
                }
                Ok(answer)
            }
            Err(err) => {
                tracing::warn!(%method, path, elapsed_ms, error = %err, "linstor call failed");
                if err.is_timeout() {
                    return Err(LinstorError::Timeout(self.request_timeout));
                }
                Err(LinstorError::Transport(err))
            }
        }
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.endpoint.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("v1").extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }
}

fn not_successful(rd: &str, snap: &str, snapshot: Snapshot) -> LinstorError {
    LinstorError::SnapshotNotSuccessful {
        resource: rd.to_owned(),
        snapshot: snap.to_owned(),
        flags: snapshot.flags,
    }
}

/// The error an unsuccessful answer stands for: the controller's
/// `ApiCallRc` array, or (LINBIT's document says a single object for 500)
/// one entry, or a body that is neither.
fn error_from(answer: Answer) -> LinstorError {
    let http_status = answer.status.as_u16();
    if let Ok(entries) = serde_json::from_slice::<Vec<ApiCallRc>>(&answer.body) {
        return LinstorError::Api {
            http_status,
            entries,
        };
    }
    if let Ok(entry) = serde_json::from_slice::<ApiCallRc>(&answer.body) {
        return LinstorError::Api {
            http_status,
            entries: vec![entry],
        };
    }
    let text = String::from_utf8_lossy(&answer.body);
    let body = match text.char_indices().nth(BODY_SNIPPET) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.into_owned(),
    };
    LinstorError::UnexpectedResponse { http_status, body }
}
