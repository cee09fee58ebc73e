//! `linstor-sim`: a LINSTOR controller simulator (REST v1 and `/sim/` admin
//! API) for tests, the demo and benchmarks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use simulators::linstor::{LinstorSim, LinstorSimConfig, router};
use simulators::server::{init_logging, serve, shutdown_signal};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Seed {
    /// The demo resource definitions (the demo VMs' disks).
    Demo,
    /// Nothing; seed through `POST /sim/seed`.
    None,
}

#[derive(Debug, Parser)]
#[command(about = "LINSTOR controller simulator (REST v1 and a /sim/ admin API)")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "LINSTOR_SIM_LISTEN", default_value = "0.0.0.0:3370")]
    listen: SocketAddr,
    /// What exists at start.
    #[arg(long, env = "LINSTOR_SIM_SEED", value_enum, default_value = "demo")]
    seed: Seed,
    /// A tracing filter, e.g. "info" or "simulators=debug".
    #[arg(long, env = "LINSTOR_SIM_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Require `Authorization: Bearer <token>` on every /v1 call.
    #[arg(long, env = "LINSTOR_SIM_BEARER_TOKEN", hide_env_values = true)]
    bearer_token: Option<String>,
    /// How long taking a snapshot takes (e.g. "2s").
    #[arg(long, env = "LINSTOR_SIM_SNAPSHOT_DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    snapshot_duration: Duration,
    /// Allow rolling back to a snapshot that has newer ones (controllers
    /// that roll back by restoring, LVM from 1.32 on).
    #[arg(long)]
    allow_rollback_to_older: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(&args.log_level);
    let sim = Arc::new(LinstorSim::new(LinstorSimConfig {
        bearer_token: args.bearer_token.filter(|t| !t.is_empty()),
        snapshot_duration: args.snapshot_duration,
        rollback_requires_most_recent: !args.allow_rollback_to_older,
    }));
    if args.seed == Seed::Demo {
        sim.seed_demo();
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        seed = ?args.seed,
        auth = sim.config().bearer_token.is_some(),
        "linstor simulator listening"
    );
    serve(listener, router(sim), shutdown_signal()).await?;
    Ok(())
}
