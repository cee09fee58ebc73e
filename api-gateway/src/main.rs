//! The gateway binary: load configuration, set up logging, apply migrations,
//! bind the listeners and run until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use api_gateway::{Listeners, db, migrate, run};
use failover_platform::{Settings, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "api-gateway",
    version,
    about = "Failover orchestrator gateway: REST, gRPC, outbox relay and timers"
)]
struct Cli {
    /// Configuration file (also FAILOVER_CONFIG); FAILOVER_* variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve REST and gRPC (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
}


#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Arc::new(Settings::load(cli.config.as_deref())?);
    let telemetry =
        telemetry::init_with_tracing(&settings.log, &settings.telemetry, "api-gateway")?;
    let pool = db::pool(&settings.database).context("database settings")?;
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());

    if matches!(cli.command, Some(Command::Migrate)) {
        return migrate(&pool).await;
    }
    let result = serve(settings, pool, shutdown).await;
    // The last spans leave before the runtime does.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    result
}

async fn serve(
    settings: Arc<Settings>,
    pool: sqlx::PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if settings.gateway.migrate_on_start {
        migrate_with_retry(&pool, &shutdown).await?;
    }
    let listeners = Listeners {
        rest: TcpListener::bind(settings.gateway.rest_listen)
            .await
            .with_context(|| format!("binding REST on {}", settings.gateway.rest_listen))?,
        grpc: TcpListener::bind(settings.gateway.grpc_listen)
            .await
            .with_context(|| format!("binding gRPC on {}", settings.gateway.grpc_listen))?,
    };
    tracing::info!(rest = %settings.gateway.rest_listen, grpc = %settings.gateway.grpc_listen, "gateway listening");
    run(settings, pool, listeners, shutdown).await
}

/// Waits for the database at start instead of crashing in a restart loop.
async fn migrate_with_retry(
    pool: &sqlx::PgPool,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(500);
    loop {
        match migrate(pool).await {
            Ok(()) => return Ok(()),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "database not ready; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => anyhow::bail!("stopped before the database was ready"),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        shutdown.cancel();
    });
}
