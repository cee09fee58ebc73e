//! Liveness and readiness. The gateway is ready when Postgres answers, it
//! listens for job changes (so its status streams see every replica's) and
//! its outbox relay is connected to RabbitMQ: without the broker it still
//! accepts jobs (the outbox keeps them) but none of them moves. REST serves
//! `/health/live` and `/health/ready`; the gRPC health service reports the
//! same readiness for the gateway's gRPC services.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use failover_proto::v1::job_status_server::JobStatusServer;
use failover_proto::v1::step_coordination_server::StepCoordinationServer;

use crate::events::JobEvents;
use crate::grpc::{JobStatusService, StepCoordinationService};
use crate::metrics::GatewayMetrics;

/// How long the database may take to answer a readiness check.
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Readiness {
    pool: PgPool,
    metrics: GatewayMetrics,
    events: JobEvents,
}

/// The outcome of one readiness check; `None` is fine, `Some` says why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessReport {
    pub database: Option<String>,
    pub broker: Option<String>,
    pub events: Option<String>,
}

impl ReadinessReport {
    pub fn ready(&self) -> bool {
        self.database.is_none() && self.broker.is_none() && self.events.is_none()
    }
}

impl Readiness {
    pub fn new(pool: PgPool, metrics: GatewayMetrics, events: JobEvents) -> Self {
        Readiness {
            pool,
            metrics,
            events,
        }
    }

    pub async fn check(&self) -> ReadinessReport {
        let query = sqlx::query("SELECT 1").execute(&self.pool);
        let database = match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, query).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "no answer within {}",
                humantime::format_duration(DATABASE_CHECK_TIMEOUT)
            )),
        };
        let broker = (!self.metrics.relay_connected())
            .then(|| "the outbox relay is not connected to RabbitMQ".to_owned());
        let events = (!self.events.is_listening())
            .then(|| "not listening for job changes (status streams would miss them)".to_owned());
        ReadinessReport {
            database,
            broker,
            events,
        }
    }
}

/// Keeps the gRPC health service in step with readiness until `shutdown`,
/// when every service turns NOT_SERVING.
pub async fn report_grpc_health(
    readiness: Readiness,
    reporter: HealthReporter,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut last = None;
    loop {
        let ready = readiness.check().await.ready();
        if last != Some(ready) {
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_all(&reporter, status).await;
            last = Some(ready);
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    set_all(&reporter, ServingStatus::NotServing).await;
}

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    // "" is the server as a whole.
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(
            <StepCoordinationServer<StepCoordinationService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    reporter
        .set_service_status(
            <JobStatusServer<JobStatusService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}
