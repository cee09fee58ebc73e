//! Job status for dashboards: by job id or correlation id, and lists with the
//! REST filters.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use failover_proto::v1 as pb;
use failover_proto::v1::job_status_server::JobStatus;

use super::{invalid, status, watch};
use crate::events::JobEvents;
use crate::http::jobs_filter;
use crate::jobs::model::{JobDetail, JobRow, StepRow};
use crate::jobs::service::FailoverService;

#[derive(Debug, Clone)]
pub struct JobStatusService {
    service: FailoverService,
    events: JobEvents,
    shutdown: CancellationToken,
}

impl JobStatusService {
    pub fn new(service: FailoverService, events: JobEvents, shutdown: CancellationToken) -> Self {
        JobStatusService {
            service,
            events,
            shutdown,
        }
    }

    async fn resolve(&self, key: Option<pb::get_job_request::Key>) -> Result<JobDetail, Status> {
        match key {
            Some(pb::get_job_request::Key::JobId(id)) => self.service.get_job(&id).await,
            Some(pb::get_job_request::Key::CorrelationId(id)) => {
                let id = Uuid::parse_str(&id)
                    .map_err(|_| invalid(format!("correlation_id {id:?} is not a UUID")))?;
                self.service.get_job_by_correlation(id).await
            }
            None => return Err(invalid("job_id or correlation_id must be set")),
        }
        .map_err(status)
    }
}

pub(super) fn timestamp(
    t: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<prost_types::Timestamp> {
    t.map(|t| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

pub(super) fn job_message(row: &JobRow, steps: &[StepRow]) -> pb::Job {
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
    job_message(&d.job, &d.steps)
}

fn list_filter(req: pb::ListJobsRequest) -> Result<crate::jobs::store::JobFilter, Status> {
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    jobs_filter(
        non_empty(req.status),
        non_empty(req.job_type),
        non_empty(req.vm_id),
        non_empty(req.correlation_id),
        (req.limit > 0).then_some(i64::from(req.limit)),
        Some(i64::from(req.offset)),
    )
    .map_err(|e| invalid(e.message))
}

#[tonic::async_trait]
impl JobStatus for JobStatusService {
    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let found = self.resolve(request.into_inner().key).await?;
        Ok(Response::new(detail(&found)))
    }

    type WatchJobStream = ReceiverStream<Result<pb::JobEvent, Status>>;

    async fn watch_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let found = self.resolve(request.into_inner().key).await?;
        // Subscribed and at its first snapshot before the call is answered.
        let watch =
            watch::JobWatch::open(self.service.clone(), &self.events, found.job.job_id).await?;
        let (tx, rx) = mpsc::channel(watch::BUFFER);
        tokio::spawn(watch.run(tx, self.shutdown.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type WatchJobsStream = ReceiverStream<Result<pb::JobEvent, Status>>;

    async fn watch_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<Self::WatchJobsStream>, Status> {
        let filter = list_filter(request.into_inner())?;
        // Subscribed, with the matching jobs read, before the call is answered.
        let watch = watch::JobsWatch::open(self.service.clone(), &self.events, filter).await?;
        let (tx, rx) = mpsc::channel(watch::BUFFER);
        tokio::spawn(watch.run(tx, self.shutdown.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let filter = list_filter(request.into_inner())?;
        let (rows, total) = self.service.list_jobs(&filter).await.map_err(status)?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: rows.iter().map(|r| job_message(r, &[])).collect(),
            total: u64::try_from(total).unwrap_or_default(),
        }))
    }
}
