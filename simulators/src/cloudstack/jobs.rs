//! Async jobs: started by a command with the work they will do, ended when
//! their time is up. Jobs end lazily: every request first ends the jobs that
//! are due, in the order they became due, so what a client observes is the
//! same as if they had ended on time.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::effects::{self, Effect};
use super::errors::ApiError;
use super::model::{ACCOUNT_ID, USER_ID, World, new_id, now_stamp};

/// `jobstatus` values.
pub const PENDING: u8 = 0;
pub const SUCCEEDED: u8 = 1;
pub const FAILED: u8 = 2;

#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    /// The command that started it (`startVirtualMachine`).
    pub command: String,
    /// The Java class the real server reports as `cmd`.
    pub cmd_class: &'static str,
    pub instance_type: Option<&'static str>,
    pub instance_id: Option<String>,
    pub created: String,
    pub due: Instant,
    pub status: u8,
    pub result_code: u16,
    pub result: Option<Value>,
    pub completed: Option<String>,
    /// The work still to do; `None` once the job ended.
    pub effect: Option<Effect>,
    /// The job will fail with 530 (fault `fail_async_job`).
    pub inject_failure: bool,
}

/// What a command hands over to a new job.
#[derive(Debug)]
pub struct JobSpec {
    pub command: &'static str,
    pub cmd_class: &'static str,
    pub instance_type: Option<&'static str>,
    pub instance_id: Option<String>,
    /// The work, or the error the job will end with at once (the real
    /// server checks most state rules inside the job, not before it).
    pub effect: Result<Effect, ApiError>,
}

/// How the running command wants its jobs to behave.
#[derive(Debug, Clone, Copy)]
pub struct JobTiming {
    pub duration: Duration,
    pub inject_failure: bool,
}

impl World {
    /// Starts a job and returns its id.
    pub fn start_job(&mut self, spec: JobSpec, timing: JobTiming) -> String {
        let now = Instant::now();
        let (effect, due) = match spec.effect {
            Ok(effect) => (effect, now + timing.duration),
            Err(err) => (Effect::Fail(err), now),
        };
        let id = new_id();
        self.jobs.push(Job {
            id: id.clone(),
            command: spec.command.to_owned(),
            cmd_class: spec.cmd_class,
            instance_type: spec.instance_type,
            instance_id: spec.instance_id,
            created: now_stamp(),
            due,
            status: PENDING,
            result_code: 0,
            result: None,
            completed: None,
            inject_failure: timing.inject_failure && !matches!(effect, Effect::Fail(_)),
            effect: Some(effect),
        });
        id
    }

    /// Ends every job due by `now`, earliest first.
    pub fn advance(&mut self, now: Instant) {
        loop {
            let next = self
                .jobs
                .iter()
                .enumerate()
                .filter(|(_, j)| j.effect.is_some() && j.due <= now)
                .min_by_key(|(_, j)| j.due)
                .map(|(i, _)| i);
            let Some(index) = next else {
                return;
            };
            let Some(effect) = self.jobs[index].effect.take() else {
                return;
            };
            let outcome = if self.jobs[index].inject_failure {
                effects::roll_back(self, &effect);
                Err(ApiError::internal(
                    "Internal error executing command, please contact your system administrator",
                ))
            } else {
                effects::apply(self, effect)
            };
            let job = &mut self.jobs[index];
            job.completed = Some(now_stamp());
            match outcome {
                Ok(result) => {
                    job.status = SUCCEEDED;
                    job.result_code = 0;
                    job.result = Some(result);
                }
                Err(err) => {
                    job.status = FAILED;
                    job.result_code = err.code;
                    job.result = Some(err.job_result());
                }
            }
        }
    }
}

/// The job as `queryAsyncJobResult` answers it.
pub fn render(job: &Job) -> Value {
    let mut out = json!({
        "accountid": ACCOUNT_ID,
        "userid": USER_ID,
        "cmd": job.cmd_class,
        "jobstatus": job.status,
        "jobprocstatus": 0,
        "jobresultcode": job.result_code,
        "created": job.created,
        "jobid": job.id,
    });
    if let Some(result) = &job.result {
        out["jobresulttype"] = json!("object");
        out["jobresult"] = result.clone();
    }
    if let Some(kind) = job.instance_type {
        out["jobinstancetype"] = json!(kind);
    }
    if let Some(id) = &job.instance_id {
        out["jobinstanceid"] = json!(id);
    }
    if let Some(done) = &job.completed {
        out["completed"] = json!(done);
    }
    out
}
