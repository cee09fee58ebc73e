//! An interposer on the step-coordination gRPC: workers talk to it, it
//! forwards every call to the gateway and records it with the answer. A
//! test can hold one call of one worker at a chosen point — before a claim
//! reaches the gateway, after the gateway granted it but before the worker
//! hears so, before a report or a heartbeat reaches the gateway — to kill
//! the worker exactly there, to let a report arrive late, or to play a slow
//! gateway.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use failover_proto::v1 as pb;
use failover_proto::v1::step_coordination_client::StepCoordinationClient;
use failover_proto::v1::step_coordination_server::{StepCoordination, StepCoordinationServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The claim has not reached the gateway.
    BeforeClaim,
    /// The gateway granted the claim; the worker has not heard (so it has
    /// not acked the message).
    AfterClaim,
    /// The step's work is done; its report has not reached the gateway.
    BeforeReport,
    /// A heartbeat has not reached the gateway (a slow gateway).
    Heartbeat,
}

/// What happens to a held call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Goes on as if nothing happened.
    Forward,
    /// Fails with UNAVAILABLE (the worker is gone anyway).
    Drop,
}

/// One call as the tap saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub kind: &'static str,
    pub worker_id: String,
    pub job_id: String,
    pub step: String,
    pub attempt: u32,
    /// Granted (claim), lease held (heartbeat) or accepted (report); `None`
    /// when the call failed.
    pub ok: Option<bool>,
    pub reason: String,
}

struct Rule {
    point: Point,
    worker_id: String,
    step: String,
    held: oneshot::Sender<()>,
    release: oneshot::Receiver<Release>,
}

/// A call held by the tap, to release later.
#[derive(Debug)]
pub struct Hold {
    held: Option<oneshot::Receiver<()>>,
    release: Option<oneshot::Sender<Release>>,
}

impl Hold {
    /// Waits until the call is held.
    pub async fn held(&mut self, within: Duration) {
        let held = self.held.take().expect("waited once");
        tokio::time::timeout(within, held)
            .await
            .expect("the call was not held in time")
            .expect("the tap went away");
    }

    pub fn release(&mut self, how: Release) {
        if let Some(release) = self.release.take() {
            let _ = release.send(how);
        }
    }
}

#[derive(Clone)]
pub struct Tap {
    upstream: StepCoordinationClient<Channel>,
    calls: Arc<Mutex<Vec<Call>>>,
    rules: Arc<Mutex<Vec<Rule>>>,
    /// `(worker, step, attempt)` whose heartbeats fail as if the gateway
    /// could not be reached.
    partitioned: Arc<Mutex<Vec<(String, String, u32)>>>,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap").finish_non_exhaustive()
    }
}

impl Tap {
    /// Serves the tap on a free loopback port in front of `gateway_grpc`
    /// until `shutdown`; returns it and its URL.
    pub async fn start(gateway_grpc: &str, shutdown: CancellationToken) -> (Tap, String) {
        let channel = tonic::transport::Endpoint::from_shared(gateway_grpc.to_owned())
            .unwrap()
            .connect_lazy();
        let tap = Tap {
            upstream: StepCoordinationClient::new(channel),
            calls: Arc::default(),
            rules: Arc::default(),
            partitioned: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(StepCoordinationServer::new(tap.clone()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                shutdown.cancelled().await
            });
        tokio::spawn(server);
        (tap, format!("http://{addr}"))
    }

    /// Holds the next call of `worker_id` for `step` at `point`.
    pub fn hold(&self, point: Point, worker_id: &str, step: &str) -> Hold {
        let (held_tx, held_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        self.rules.lock().unwrap().push(Rule {
            point,
            worker_id: worker_id.to_owned(),
            step: step.to_owned(),
            held: held_tx,
            release: release_rx,
        });
        Hold {
            held: Some(held_rx),
            release: Some(release_tx),
        }
    }

    /// From now on the heartbeats of `worker_id` for `attempt` of `step`
    /// fail with UNAVAILABLE, as if the gateway could not be reached.
    pub fn partition_heartbeats(&self, worker_id: &str, step: &str, attempt: u32) {
        self.partitioned
            .lock()
            .unwrap()
            .push((worker_id.to_owned(), step.to_owned(), attempt));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The calls of one kind for one step of one job.
    pub fn calls_for(&self, kind: &str, job_id: &str, step: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.kind == kind && c.job_id == job_id && c.step == step)
            .collect()
    }

    async fn pause(&self, point: Point, worker_id: &str, step: &str) -> Result<(), Status> {
        let rule = {
            let mut rules = self.rules.lock().unwrap();
            let index = rules
                .iter()
                .position(|r| r.point == point && r.worker_id == worker_id && r.step == step);
            index.map(|i| rules.remove(i))
        };
        let Some(rule) = rule else {
            return Ok(());
        };
        let _ = rule.held.send(());
        match rule.release.await {
            Ok(Release::Forward) => Ok(()),
            _ => Err(Status::unavailable("dropped by the test's tap")),
        }
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

fn parts<T>(request: Request<T>) -> (MetadataMap, T) {
    let (metadata, _, message) = request.into_parts();
    (metadata, message)
}

/// The call as the worker made it (correlation id and trace context kept).
fn forward<T>(metadata: &MetadataMap, message: T) -> Request<T> {
    let mut request = Request::new(message);
    *request.metadata_mut() = metadata.clone();
    request
}

#[tonic::async_trait]
impl StepCoordination for Tap {
    async fn claim_step(
        &self,
        request: Request<pb::ClaimStepRequest>,
    ) -> Result<Response<pb::ClaimStepResponse>, Status> {
        let (metadata, req) = parts(request);
        self.pause(Point::BeforeClaim, &req.worker_id, &req.step_name)
            .await?;
        let answer = self
            .upstream
            .clone()
            .claim_step(forward(&metadata, req.clone()))
            .await;
        self.record(Call {
            kind: "claim",
            worker_id: req.worker_id.clone(),
            job_id: req.job_id.clone(),
            step: req.step_name.clone(),
            attempt: req.attempt,
            ok: answer.as_ref().ok().map(|a| a.get_ref().granted),
            reason: answer
                .as_ref()
                .map(|a| a.get_ref().reason.clone())
                .unwrap_or_else(|s| s.to_string()),
        });
        let answer = answer?;
        self.pause(Point::AfterClaim, &req.worker_id, &req.step_name)
            .await?;
        Ok(answer)
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let (metadata, req) = parts(request);
        self.pause(Point::Heartbeat, &req.worker_id, &req.step_name)
            .await?;
        let cut_off = self
            .partitioned
            .lock()
            .unwrap()
            .iter()
            .any(|(w, s, a)| *w == req.worker_id && *s == req.step_name && *a == req.attempt);
        if cut_off {
            self.record(Call {
                kind: "heartbeat",
                worker_id: req.worker_id,
                job_id: req.job_id,
                step: req.step_name,
                attempt: req.attempt,
                ok: None,
                reason: "partitioned".into(),
            });
            return Err(Status::unavailable("partitioned by the test's tap"));
        }
        let answer = self
            .upstream
            .clone()
            .heartbeat(forward(&metadata, req.clone()))
            .await;
        self.record(Call {
            kind: "heartbeat",
            worker_id: req.worker_id,
            job_id: req.job_id,
            step: req.step_name,
            attempt: req.attempt,
            ok: answer.as_ref().ok().map(|a| a.get_ref().lease_held),
            reason: String::new(),
        });
        answer
    }

    async fn report_step(
        &self,
        request: Request<pb::ReportStepRequest>,
    ) -> Result<Response<pb::ReportStepResponse>, Status> {
        let (metadata, req) = parts(request);
        self.pause(Point::BeforeReport, &req.worker_id, &req.step_name)
            .await?;
        let answer = self
            .upstream
            .clone()
            .report_step(forward(&metadata, req.clone()))
            .await;
        self.record(Call {
            kind: "report",
            worker_id: req.worker_id.clone(),
            job_id: req.job_id.clone(),
            step: req.step_name.clone(),
            attempt: req.attempt,
            ok: answer.as_ref().ok().map(|a| a.get_ref().accepted),
            reason: answer
                .as_ref()
                .map(|a| a.get_ref().reason.clone())
                .unwrap_or_else(|s| s.to_string()),
        });
        answer
    }
}
