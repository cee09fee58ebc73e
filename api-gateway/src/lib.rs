//! The API gateway: REST (axum) and gRPC (tonic) fronts over Postgres, the
//! outbox relay to RabbitMQ, and the timers. Any number of replicas run side
//! by side; they cooperate only through Postgres.

pub mod db;
pub mod dispatch;
pub mod events;
pub mod grpc;
pub mod health;
pub mod http;
pub mod metrics;
pub mod relay;
pub mod service;
pub mod timers;

use std::sync::Arc;

use anyhow::Context as _;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use failover_platform::Settings;
use failover_platform::queue::StepTopology;
use failover_proto::v1::job_status_server::JobStatusServer;
use failover_proto::v1::step_coordination_server::StepCoordinationServer;

use crate::service::FailoverService;

/// The listeners the gateway serves on (bound by the caller, port 0 in tests).
#[derive(Debug)]
pub struct Listeners {
    pub rest: TcpListener,
    pub grpc: TcpListener,
}

/// Applies pending migrations; safe from several replicas at once.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    failover_migrations::apply(pool)
        .await
        .context("applying database migrations")
}

/// Serves until `shutdown` is cancelled, then drains in-flight requests.
pub async fn run(
    settings: Arc<Settings>,
    pool: PgPool,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = metrics::GatewayMetrics::new();
    let (dispatches, handed_over) = relay::fast_path();
    let service = FailoverService::new(
        pool.clone(),
        service::rules(&settings),
        metrics.clone(),
        dispatches,
    );
    let job_events = events::JobEvents::default();
    let events_task = tokio::spawn(job_events.clone().run(pool.clone(), shutdown.clone()));

    let relay = relay::OutboxRelay::new(
        db::relay_pool(&settings.database).context("database settings")?,
        settings.amqp.url.clone(),
        StepTopology::new(&settings.amqp),
        settings.gateway.timer_interval,
        handed_over,
    )
    .with_metrics(metrics.clone());
    let relay_task = tokio::spawn(relay.run(shutdown.clone()));
    let outbox_sampler_task = tokio::spawn(timers::run_outbox_upkeep(
        pool.clone(),
        metrics.clone(),
        settings.gateway.timer_interval,
        shutdown.clone(),
    ));
    let readiness = health::Readiness::new(pool.clone(), metrics.clone(), job_events.clone());
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let health_task = tokio::spawn(health::report_grpc_health(
        readiness.clone(),
        health_reporter,
        settings.gateway.timer_interval,
        shutdown.clone(),
    ));
    let timer_task = tokio::spawn(timers::run_lease_expiry(
        service.clone(),
        settings.gateway.timer_interval,
        shutdown.clone(),
    ));

    let auto_cleanup_task = tokio::spawn(timers::run_auto_cleanup(
        service.clone(),
        settings.gateway.timer_interval,
        shutdown.clone(),
    ));
    let limits = Arc::new(
        http::rate_limit::RateLimits::new(&settings.gateway).with_metrics(metrics.clone()),
    );
    let forget_task = tokio::spawn(http::rate_limit::run_upkeep(
        limits.clone(),
        shutdown.clone(),
    ));
    let app = http::router(http::AppState {
        service: service.clone(),
        settings: settings.clone(),
        limits,
        metrics,
        readiness,
    });
    let rest_shutdown = shutdown.clone();
    let rest = axum::serve(
        listeners.rest,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { rest_shutdown.cancelled().await });

    let grpc_shutdown = shutdown.clone();
    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(StepCoordinationServer::new(
            grpc::StepCoordinationService::new(service.clone()),
        ))
        .add_service(JobStatusServer::new(grpc::JobStatusService::new(
            service,
            job_events,
            shutdown.clone(),
        )))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listeners.grpc), async move {
            grpc_shutdown.cancelled().await
        });

    let (rest, grpc) = tokio::join!(rest, grpc);
    shutdown.cancel();
    let _ = tokio::join!(
        relay_task,
        timer_task,
        auto_cleanup_task,
        forget_task,
        events_task,
        outbox_sampler_task,
        health_task
    );
    rest.context("REST server")?;
    grpc.context("gRPC server")?;
    Ok(())
}
