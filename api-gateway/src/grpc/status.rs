//! Job status for dashboards: by job id or correlation id, lists with the
//! REST filters, and the live streams ([`super::watch`]).

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use failover_proto::v1 as pb;
use failover_proto::v1::job_status_server::JobStatus;

use super::convert::{self, list_filter};
use super::{invalid, to_status, watch};
use crate::db::jobs::JobDetail;
use crate::events::JobEvents;
use crate::service::FailoverService;

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
            Some(pb::get_job_request::Key::JobId(id)) => self.service.job_detail(&id).await,
            Some(pb::get_job_request::Key::CorrelationId(id)) => {
                let id = Uuid::parse_str(&id)
                    .map_err(|_| invalid(format!("correlation_id {id:?} is not a UUID")))?;
                self.service.job_detail_by_correlation(id).await
            }
            None => return Err(invalid("job_id or correlation_id must be set")),
        }
        .map_err(to_status)
    }
}

fn filter_of(req: pb::ListJobsRequest) -> Result<crate::db::jobs::JobFilter, Status> {
    list_filter(req).map_err(|problems| invalid(problems.join("; ")))
}

#[tonic::async_trait]
impl JobStatus for JobStatusService {
    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let found = self.resolve(request.into_inner().key).await?;
        Ok(Response::new(pb::Job::from(&found)))
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
        let filter = filter_of(request.into_inner())?;
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
        let filter = filter_of(request.into_inner())?;
        let (rows, total) = self.service.list_jobs(&filter).await.map_err(to_status)?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: rows.iter().map(|r| convert::job(r, &[])).collect(),
            total: u64::try_from(total.count).unwrap_or_default(),
        }))
    }
}
