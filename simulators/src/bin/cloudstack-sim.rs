//! `cloudstack-sim`: a CloudStack management-server simulator
//! (`/client/api` and the `/sim/` admin API) for tests, the demo and
//! benchmarks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use simulators::cloudstack::{
    CloudStackSim, CloudStackSimConfig, DEFAULT_API_KEY, DEFAULT_SECRET_KEY, router,
};
use simulators::server::{init_logging, serve, shutdown_signal};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Seed {
    /// The demo zone, offerings, template, networks and failover appliance.
    Demo,
    /// Nothing; seed through `POST /sim/seed`.
    None,
}

#[derive(Debug, Parser)]
#[command(about = "CloudStack management-server simulator (/client/api and a /sim/ admin API)")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "CLOUDSTACK_SIM_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// The API key accepted.
    #[arg(long, env = "CLOUDSTACK_SIM_API_KEY", default_value = DEFAULT_API_KEY)]
    api_key: String,
    /// The secret key of that API key.
    #[arg(
        long,
        env = "CLOUDSTACK_SIM_SECRET_KEY",
        default_value = DEFAULT_SECRET_KEY,
        hide_env_values = true,
        hide_default_value = true
    )]
    secret_key: String,
    /// How long an async job runs, in milliseconds.
    #[arg(long, env = "CLOUDSTACK_SIM_ASYNC_JOB_MS", default_value_t = 500)]
    async_job_ms: u64,
    /// What exists at start.
    #[arg(long, env = "CLOUDSTACK_SIM_SEED", value_enum, default_value = "demo")]
    seed: Seed,
    /// A tracing filter, e.g. "info" or "simulators=debug".
    #[arg(long, env = "CLOUDSTACK_SIM_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(&args.log_level);
    anyhow::ensure!(
        !args.api_key.is_empty() && !args.secret_key.is_empty(),
        "--api-key and --secret-key must not be empty"
    );
    let sim = Arc::new(CloudStackSim::new(CloudStackSimConfig {
        async_job_duration: Duration::from_millis(args.async_job_ms),
        accounts: BTreeMap::from([(args.api_key.clone(), args.secret_key)]),
    }));
    if args.seed == Seed::Demo {
        sim.seed_demo().context("cannot seed the demo scenario")?;
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        seed = ?args.seed,
        api_key = args.api_key.as_str(),
        async_job_ms = args.async_job_ms,
        "cloudstack simulator listening"
    );
    serve(listener, router(sim), shutdown_signal()).await?;
    Ok(())
}
