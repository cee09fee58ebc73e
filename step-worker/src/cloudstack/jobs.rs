//! Async jobs: submitting an async command and polling
//! `queryAsyncJobResult` with growing intervals until the job ends or the
//! deadline passes.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::client::CloudStackClient;
use super::error::{CloudStackError, INTERNAL_ERROR};
use super::types::{AsyncJob, JobStatus};
use super::wire::{Params, decode_error, decode_list, get_ci, string_field};

/// What an async command answers at once.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Submitted {
    pub job_id: String,
    /// The new entity's id (create-type commands).
    pub id: Option<String>,
}

impl CloudStackClient {
    /// `queryAsyncJobResult`: the job as it is now (retried like any read).
    pub async fn query_async_job(&self, job_id: &str) -> Result<AsyncJob, CloudStackError> {
        const CMD: &str = "queryAsyncJobResult";
        let inner = self
            .send_retried(CMD, &Params::new().with("jobid", job_id))
            .await?;
        serde_json::from_value(inner).map_err(|e| CloudStackError::Decode {
            command: CMD.to_owned(),
            reason: e.to_string(),
        })
    }

    /// `listAsyncJobs`: the caller's recent jobs.
    pub async fn list_async_jobs(&self) -> Result<Vec<AsyncJob>, CloudStackError> {
        const CMD: &str = "listAsyncJobs";
        let inner = self.send_retried(CMD, &Params::new()).await?;
        decode_list(CMD, &inner, "asyncjobs")
    }

    /// Polls job `job_id` (started by `command`) until it ends: intervals
    /// grow from `async_poll_initial` (doubling) to `async_poll_max`, the
    /// whole wait is bounded by `async_job_deadline`. A succeeded job is
    /// returned; a failed or cancelled one is a typed error. Queries that
    /// fail transiently are tolerated until the deadline, which ends in
    /// [`CloudStackError::AsyncJobDeadline`] carrying the job id.
    pub async fn wait_for_job(
        &self,
        command: &str,
        job_id: &str,
    ) -> Result<AsyncJob, CloudStackError> {
        let started = Instant::now();
        let deadline = self.timings.async_job_deadline;
        let mut interval = self.timings.async_poll_initial;
        loop {
            let left = deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                tracing::warn!(
                    command,
                    job_id,
                    deadline_ms = deadline.as_millis() as u64,
                    "cloudstack async job outlived the deadline"
                );
                return Err(CloudStackError::AsyncJobDeadline {
                    command: command.to_owned(),
                    job_id: job_id.to_owned(),
                    deadline,
                });
            }
            tokio::time::sleep(interval.min(left)).await;
            interval = next_interval(interval, self.timings.async_poll_max);
            let job = match self.query_async_job(job_id).await {
                Ok(job) => job,
                Err(err) if err.is_retryable() => {
                    tracing::warn!(command, job_id, error = %err, "cannot query cloudstack async job, polling on");
                    continue;
                }
                Err(err) => return Err(err),
            };
            match job.status() {
                JobStatus::Pending => continue,
                JobStatus::Succeeded => {
                    tracing::debug!(
                        command,
                        job_id,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "cloudstack async job succeeded"
                    );
                    return Ok(job);
                }
                JobStatus::Failed => return Err(job_failure(command, &job)),
                JobStatus::Cancelled => {
                    return Err(CloudStackError::AsyncJobCancelled {
                        command: command.to_owned(),
                        job_id: job.job_id,
                    });
                }
                JobStatus::Unknown(code) => {
                    return Err(CloudStackError::Decode {
                        command: command.to_owned(),
                        reason: format!("async job {job_id} has unknown jobstatus {code}"),
                    });
                }
            }
        }
    }

    /// Submits an async command that is harmless to repeat (retried like
    /// a read) and waits for its job.
    pub(crate) async fn run_async(
        &self,
        command: &str,
        params: &Params,
    ) -> Result<AsyncJob, CloudStackError> {
        let inner = self.send_retried(command, params).await?;
        let job_id = string_field(command, &inner, "jobid")?;
        tracing::debug!(command, job_id, "cloudstack async job started");
        self.wait_for_job(command, &job_id).await
    }

    /// Submits a create-type async command exactly once: a transport error
    /// or 5xx is returned as is, for the caller to look before trying again.
    pub(crate) async fn submit_create(
        &self,
        command: &str,
        params: &Params,
    ) -> Result<Submitted, CloudStackError> {
        let inner = self.send_once(command, params).await?;
        let job_id = string_field(command, &inner, "jobid")?;
        let id = string_field(command, &inner, "id").ok();
        tracing::debug!(
            command,
            job_id,
            id = id.as_deref().unwrap_or(""),
            "cloudstack async create started"
        );
        Ok(Submitted { job_id, id })
    }
}

/// The entity a succeeded job returned under `key` (`virtualmachine`,
/// `volume`, `snapshot`, `vmsnapshot`).
pub(crate) fn job_entity<T: DeserializeOwned>(
    command: &str,
    job: &AsyncJob,
    key: &str,
) -> Result<T, CloudStackError> {
    let entity = job.result_object(key).ok_or_else(|| {
        decode_error(
            command,
            &format!("no {key} in the result of job {}", job.job_id),
        )
    })?;
    serde_json::from_value(entity.clone())
        .map_err(|e| decode_error(command, &format!("{key}: {e}")))
}

/// The typed error of a job that ended with `jobstatus` 2.
fn job_failure(command: &str, job: &AsyncJob) -> CloudStackError {
    let result = job.job_result.as_ref().and_then(Value::as_object);
    let code = result
        .and_then(|r| get_ci(r, "errorcode"))
        .and_then(Value::as_u64)
        .or(job.job_result_code.and_then(|c| u64::try_from(c).ok()))
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c != 0)
        .unwrap_or(INTERNAL_ERROR);
    let text = result
        .and_then(|r| get_ci(r, "errortext"))
        .and_then(Value::as_str)
        .unwrap_or("the async job failed without an error text");
    tracing::warn!(
        command,
        job_id = job.job_id.as_str(),
        error_code = code,
        "cloudstack async job failed"
    );
    CloudStackError::AsyncJobFailed {
        command: command.to_owned(),
        job_id: job.job_id.clone(),
        error_code: code,
        error_text: text.to_owned(),
    }
}

/// The interval schedule of [`CloudStackClient::wait_for_job`], for
/// callers that poll something else with the same rhythm.
pub(crate) fn next_interval(current: Duration, max: Duration) -> Duration {
    (current * 2).min(max)
}
