//! The signed transport: one request, retries of what is safe to repeat.

use std::fmt;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff};
use chrono::Utc;
use failover_platform::config::CloudStackSettings;
use failover_platform::telemetry::propagation;
use serde_json::Value;
use tracing::Instrument as _;
use url::Url;

use super::error::CloudStackError;
use super::wire::{Params, Signer, decode_response};
use crate::http::{backoff, build_client};
use crate::metrics::CallMetrics;

/// Requests longer than this go as a POST form instead of a GET query.
const MAX_QUERY_LEN: usize = 4000;

/// Timings the client works with, taken from [`CloudStackSettings`].
#[derive(Debug, Clone)]
pub(crate) struct Timings {
    pub signature_lifetime: Duration,
    pub request_timeout: Duration,
    pub max_retries: u32,
    pub retry_initial_backoff: Duration,
    pub retry_max_backoff: Duration,
    pub async_poll_initial: Duration,
    pub async_poll_max: Duration,
    pub async_job_deadline: Duration,
}

/// A client of the CloudStack API (`/client/api`): signed requests
/// (signature version 3), typed calls, async jobs awaited to their end.
///
/// Sync reads and non-create commands are retried on transport errors,
/// timeouts, 5xx and 429; a create is never repeated blindly (see
/// [`CloudStackClient::deploy_vm`]).
pub struct CloudStackClient {
    http: reqwest::Client,
    endpoint: Url,
    signer: Signer,
    pub(crate) timings: Timings,
    calls: CallMetrics,
}

impl fmt::Debug for CloudStackClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudStackClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("timings", &self.timings)
            .finish_non_exhaustive()
    }
}

impl CloudStackClient {
    pub fn new(settings: &CloudStackSettings) -> Result<Self, CloudStackError> {
        let http = build_client(settings.request_timeout, settings.ca_cert_path.as_deref())?;
        Ok(Self {
            http,
            endpoint: settings.endpoint.clone(),
            signer: Signer::new(settings.api_key.clone(), settings.secret_key.clone()),
            timings: Timings {
                signature_lifetime: settings.signature_lifetime,
                request_timeout: settings.request_timeout,
                max_retries: settings.max_retries,
                retry_initial_backoff: settings.retry_initial_backoff,
                retry_max_backoff: settings.retry_max_backoff,
                async_poll_initial: settings.async_poll_initial,
                async_poll_max: settings.async_poll_max.max(settings.async_poll_initial),
                async_job_deadline: settings.async_job_deadline,
            },
            calls: CallMetrics::default(),
        })
    }

    /// Records every request's latency and failures into `calls`.
    pub fn with_call_metrics(mut self, calls: CallMetrics) -> Self {
        self.calls = calls;
        self
    }

    /// The API endpoint, `http(s)://HOST:8080/client/api`.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// Runs a command that is safe to repeat (a sync read, or an async
    /// command whose repetition is harmless) and returns the object under
    /// its response key. Retried on transport errors, timeouts, 5xx and 429.
    pub async fn call(
        &self,
        command: &str,
        params: &[(&str, &str)],
    ) -> Result<Value, CloudStackError> {
        self.send_retried(command, &params.iter().copied().collect())
            .await
    }

    /// Sends once, then again after a backoff while the error is retryable.
    pub(crate) async fn send_retried(
        &self,
        command: &str,
        params: &Params,
    ) -> Result<Value, CloudStackError> {
        let mut delays = self.backoff_delays();
        let mut attempt = 1u32;
        loop {
            match self.send_once(command, params).await {
                Ok(value) => return Ok(value),
                Err(err) if err.is_retryable() => {
                    let Some(delay) = delays.next() else {
                        return Err(err);
                    };
                    tracing::warn!(
                        command,
                        attempt,
                        retry_in_ms = delay.as_millis() as u64,
                        error = %err,
                        "cloudstack call failed, retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The retry delays of one logical call.
    pub(crate) fn backoff_delays(&self) -> ExponentialBackoff {
        backoff(
            self.timings.retry_initial_backoff,
            self.timings.retry_max_backoff,
            self.timings.max_retries,
        )
        .build()
    }

    /// One signed request, no retry, as a client span in the current trace
    /// whose context goes along in the `traceparent` header. The URL (with
    /// the API key and the signature) is never logged.
    pub(crate) async fn send_once(
        &self,
        command: &str,
        params: &Params,
    ) -> Result<Value, CloudStackError> {
        let span = tracing::info_span!(
            "cloudstack.call",
            otel.name = %format!("cloudstack {command}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            peer.service = "cloudstack",
            cloudstack.command = command,
            http.request.method = tracing::field::Empty,
            server.address = self.endpoint.host_str(),
            url.path = self.endpoint.path(),
            http.response.status_code = tracing::field::Empty,
        );
        let started = Instant::now();
        let answer = self
            .exchange(command, params, &span)
            .instrument(span.clone())
            .await;
        let error_kind = match &answer {
            Ok((status, _)) => CallMetrics::status_kind(*status),
            Err(CloudStackError::Timeout { .. }) => Some("timeout"),
            Err(_) => Some("transport"),
        };
        self.calls
            .observe("cloudstack", command, started.elapsed(), error_kind);
        if error_kind.is_some() {
            span.record("otel.status_code", "ERROR");
        }
        let (status, body) = answer?;
        decode_response(command, status, &body)
    }

    /// The request itself: the answer's HTTP status and body.
    async fn exchange(
        &self,
        command: &str,
        params: &Params,
        span: &tracing::Span,
    ) -> Result<(u16, Vec<u8>), CloudStackError> {
        let expires = Utc::now()
            + chrono::Duration::from_std(self.timings.signature_lifetime)
                .unwrap_or_else(|_| chrono::Duration::minutes(5));
        let query = self.signer.signed_query(command, params, expires);
        let started = Instant::now();
        let post = query.len() > MAX_QUERY_LEN;
        span.record("http.request.method", if post { "POST" } else { "GET" });
        let mut request = if post {
            self.http
                .post(self.endpoint.clone())
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(query)
        } else {
            let mut url = self.endpoint.clone();
            url.set_query(Some(&query));
            self.http.get(url)
        };
        for (name, value) in propagation::headers(span) {
            request = request.header(name, value);
        }
        let outcome = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body.to_vec()))
        }
        .await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let (status, body) = match outcome {
            Ok(answer) => answer,
            Err(err) => {
                tracing::warn!(
                    command,
                    elapsed_ms,
                    timeout = err.is_timeout(),
                    "cloudstack call got no answer"
                );
                return Err(if err.is_timeout() {
                    CloudStackError::Timeout {
                        command: command.to_owned(),
                        after: self.timings.request_timeout,
                    }
                } else {
                    CloudStackError::Transport {
                        command: command.to_owned(),
                        source: err.without_url(),
                    }
                });
            }
        };
        span.record("http.response.status_code", status);
        tracing::debug!(command, status, elapsed_ms, "cloudstack call");
        Ok((status, body))
    }
}
