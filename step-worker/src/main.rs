//! The worker binary: `step-worker` (or `step-worker run`) consumes and
//! executes steps until SIGINT/SIGTERM; `step-worker check` tests the
//! configured connections.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use failover_platform::{Settings, telemetry};
use step_worker::{preflight, runtime};

#[derive(Debug, Parser)]
#[command(
    name = "step-worker",
    version,
    about = "Executes failover steps against LINSTOR, CloudStack and virt-customize"
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
    /// Consume and execute steps (the default).
    Run,
    /// Check that CloudStack, LINSTOR and virt-customize answer, and exit.
    Check,
}


#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Arc::new(Settings::load(cli.config.as_deref())?);
    let telemetry =
        telemetry::init_with_tracing(&settings.log, &settings.telemetry, "step-worker")?;
    if matches!(cli.command, Some(Command::Check)) {
        let checks = preflight::run(&settings).await;
        let mut ok = true;
        for check in &checks {
            println!(
                "{:<15} {:<4} {}",
                check.system,
                if check.ok { "ok" } else { "FAIL" },
                check.detail
            );
            ok &= check.ok;
        }
        std::process::exit(if ok { 0 } else { 1 });
    }
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        signal.cancel();
    });
    let result = match runtime::Listeners::bind(&settings).await {
        Ok(listeners) => runtime::serve(settings, listeners, shutdown).await,
        Err(e) => Err(e),
    };
    // The last spans leave before the runtime does.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    result
}
