//! Job status for dashboards: by job id or correlation id, and lists with the
//! REST filters.

use tonic::{Request, Response, Status};
use uuid::Uuid;

use failover_proto::v1 as pb;
use failover_proto::v1::job_status_server::JobStatus;

use super::{invalid, status};
use crate::http::jobs_filter;
use crate::jobs::model::{JobDetail, JobRow, StepRow};
use crate::jobs::service::FailoverService;

#[derive(Debug, Clone)]
pub struct JobStatusService {
    service: FailoverService,
}

impl JobStatusService {
    pub fn new(service: FailoverService) -> Self {
        JobStatusService { service }
    }
}

fn timestamp(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<prost_types::Timestamp> {
    t.map(|t| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

fn job(row: &JobRow, steps: &[StepRow]) -> pb::Job {
    pb::Job {
        job_id: row.job_id.clone(),
        correlation_id: row.correlation_id.to_string(),
        vm_id: row.vm_id.to_string(),
        vm_name: row.vm_name.clone(),
        job_type: row.job_type.clone(),
        status: row.status.clone(),
        current_step: row.current_step.clone().unwrap_or_default(),
        linstor_snapshot_name: row.linstor_snapshot_name.clone().unwrap_or_default(),
        destination_vm_id: row.destination_vm_id.clone().unwrap_or_default(),
        error_code: row.error_code.clone().unwrap_or_default(),
        error_message: row.error_message.clone().unwrap_or_default(),
        created_at: timestamp(Some(row.created_at)),
        started_at: timestamp(row.started_at),
        completed_at: timestamp(row.completed_at),
        steps: steps
            .iter()
            .map(|s| pb::Step {
                step_name: s.step_name.clone(),
                status: s.status.clone(),
                attempt: u32::try_from(s.attempt).unwrap_or_default(),
                progress_percent: u32::try_from(s.progress).unwrap_or_default(),
                message: s.message.clone().unwrap_or_default(),
                error_code: s.error_code.clone().unwrap_or_default(),
                error_message: s.error_message.clone().unwrap_or_default(),
                started_at: timestamp(s.started_at),
                completed_at: timestamp(s.completed_at),
            })
            .collect(),
    }
}

fn detail(d: &JobDetail) -> pb::Job {
    job(&d.job, &d.steps)
}

#[tonic::async_trait]
impl JobStatus for JobStatusService {
    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let found = match request.into_inner().key {
            Some(pb::get_job_request::Key::JobId(id)) => self.service.get_job(&id).await,
            Some(pb::get_job_request::Key::CorrelationId(id)) => {
                let id = Uuid::parse_str(&id)
                    .map_err(|_| invalid(format!("correlation_id {id:?} is not a UUID")))?;
                self.service.get_job_by_correlation(id).await
            }
            None => return Err(invalid("job_id or correlation_id must be set")),
        }
        .map_err(status)?;
        Ok(Response::new(detail(&found)))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let req = request.into_inner();
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        let filter = jobs_filter(
            non_empty(req.status),
            non_empty(req.job_type),
            non_empty(req.vm_id),
            non_empty(req.correlation_id),
            (req.limit > 0).then_some(i64::from(req.limit)),
            Some(i64::from(req.offset)),
        )
        .map_err(|e| invalid(e.message))?;
        let (rows, total) = self.service.list_jobs(&filter).await.map_err(status)?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: rows.iter().map(|r| job(r, &[])).collect(),
            total: u64::try_from(total).unwrap_or_default(),
        }))
    }
}
