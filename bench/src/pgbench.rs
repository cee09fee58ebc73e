//! `pgbench -N` on the same Postgres, in the same run: the yardstick the
//! step rate is measured against (simple transactions, each committed).

use std::time::Duration;

use anyhow::Context as _;

use crate::stack::{create_database, drop_database};

/// Transactions per second of `pgbench -N -c <clients>` for `seconds`.
pub async fn tps(run_id: &str, clients: u32, seconds: Duration) -> anyhow::Result<f64> {
    let db = format!("failover_bench_pgbench_{run_id}");
    create_database(&db).await?;
    let result = run(&db, clients, seconds).await;
    drop_database(&db).await;
    result
}

async fn run(db: &str, clients: u32, seconds: Duration) -> anyhow::Result<f64> {
    let server = url::Url::parse(crate::stack::server()).context("the --postgres URL")?;
    let host = server.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = server.port().unwrap_or(5432).to_string();
    let user = if server.username().is_empty() {
        "postgres".to_owned()
    } else {
        server.username().to_owned()
    };
    let common = ["-h", host.as_str(), "-p", port.as_str(), "-U", user.as_str()];
    let init = tokio::process::Command::new("pgbench")
        .args(common)
        .args(["-i", "-q", "-s", "10", db])
        .output()
        .await
        .context("running pgbench (Debian package postgresql-contrib or postgresql-client)")?;
    anyhow::ensure!(
        init.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let run = tokio::process::Command::new("pgbench")
        .args(common)
        .args([
            "-N",
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.as_secs().max(1).to_string(),
            db,
        ])
        .output()
        .await?;
    let out = String::from_utf8_lossy(&run.stdout);
    anyhow::ensure!(
        run.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    out.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no tps in pgbench's output: {out}"))
}
