//! The list endpoint over a large jobs table: synthetic jobs (a year of a
//! busy site: 10,000 VMs, mostly completed test failovers and their
//! cleanups, some live ones, a few failed or in flight), then every filter
//! combination the API offers, each asked many times through REST.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::drive::quantile;
use crate::procs::{Process, binary, free_port, wait_ready};
use crate::stack::{create_database, drop_database, gateway_env};

const VMS: i64 = 10_000;
const BATCH: i64 = 100_000;

/// p50 and p99 in milliseconds of one filter combination.
#[derive(Debug)]
pub struct ListFigure {
    pub filter: &'static str,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The `total` the last answer gave, and whether it was exact.
    pub total: i64,
    pub exact: bool,
}

pub async fn run(
    bin_dir: &Path,
    logs: &Path,
    run_id: &str,
    jobs: i64,
    requests: usize,
) -> anyhow::Result<Vec<ListFigure>> {
    let db = format!("failover_bench_list_{run_id}");
    let url = create_database(&db).await?;
    let result = measure(bin_dir, logs, &db, &url, jobs, requests).await;
    drop_database(&db).await;
    result
}

async fn measure(
    bin_dir: &Path,
    logs: &Path,
    db: &str,
    url: &str,
    jobs: i64,
    requests: usize,
) -> anyhow::Result<Vec<ListFigure>> {
    let logs = logs.join("list");
    std::fs::create_dir_all(&logs)?;
    let (rest_port, grpc_port) = (free_port()?, free_port()?);
    let env = gateway_env(url, &format!("bench-list-{db}"), rest_port, grpc_port);
    let gateway_bin = binary(bin_dir, "api-gateway")?;
    let migrate = tokio::process::Command::new(&gateway_bin)
        .arg("migrate")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await?;
    anyhow::ensure!(
        migrate.status.success(),
        "api-gateway migrate failed: {}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await?;
    let started = Instant::now();
    let mut from = 0;
    while from < jobs {
        let to = (from + BATCH).min(jobs);
        insert(&pool, from, to, jobs).await?;
        from = to;
    }
    sqlx::query("ANALYZE failover_jobs").execute(&pool).await?;
    eprintln!(
        "  {jobs} synthetic jobs inserted in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let (vm, correlation): (uuid::Uuid, uuid::Uuid) = sqlx::query_as(
        "SELECT vm_id, correlation_id FROM failover_jobs ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;

    let gateway = Process::start("gateway", &gateway_bin, &[], &env, &logs)?;
    let rest = format!("http://127.0.0.1:{rest_port}");
    let http = reqwest::Client::new();
    let result = async {
        wait_ready(
            &http,
            &format!("{rest}/health/live"),
            "the list gateway",
            Duration::from_secs(60),
        )
        .await?;
        let combinations: [(&'static str, String); 9] = [
            ("(none)", String::new()),
            ("status", "status=completed".into()),
            ("type", "type=live".into()),
            ("vm_id", format!("vm_id={vm}")),
            ("status+type", "status=failed&type=live".into()),
            ("status+vm_id", format!("status=completed&vm_id={vm}")),
            ("type+vm_id", format!("type=test&vm_id={vm}")),
            (
                "status+type+vm_id",
                format!("status=completed&type=test&vm_id={vm}"),
            ),
            ("correlation_id", format!("correlation_id={correlation}")),
        ];
        let mut figures = Vec::new();
        for (filter, query) in combinations {
            let url = format!("{rest}/api/v1/failover/jobs?{query}");
            // Warm the connection and the caches once.
            http.get(&url).send().await?.error_for_status()?;
            let mut ms = Vec::with_capacity(requests);
            let mut last = serde_json::Value::Null;
            for _ in 0..requests {
                let t = Instant::now();
                let answer = http.get(&url).send().await?.error_for_status()?;
                last = answer.json().await?;
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            figures.push(ListFigure {
                filter,
                p50_ms: quantile(&ms, 0.5),
                p99_ms: quantile(&ms, 0.99),
                total: last["total"].as_i64().context("the answer has a total")?,
                exact: last["total_exact"].as_bool().unwrap_or(true),
            });
        }
        Ok(figures)
    }
    .await;
    gateway.stop(Duration::from_secs(10)).await;
    result
}

/// Jobs `from..to` of `all`, oldest first, one every 30 seconds.
async fn insert(pool: &sqlx::PgPool, from: i64, to: i64, all: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO failover_jobs (job_id, correlation_id, vm_id, vm_name, job_type, status,
            source_vm_spec, network_mappings, task_context, linstor_snapshot_name,
            destination_vm_id, created_at, updated_at, started_at, completed_at, holds_vm, outputs)
         SELECT CASE WHEN t = 'cleanup' THEN 'enhanced-cleanup-' ELSE 'enhanced-' || t || '-failover-' END
                  || vm || '-' || (1700000000 + i),
                md5('correlation' || i)::uuid, vm, 'vm-' || (i % $3), t, st,
                '{\"cpu_count\":2,\"memory_mb\":4096}', '{\"VM Network\":\"net-1\"}', '{}'::jsonb,
                CASE WHEN t <> 'cleanup' THEN t || '-' || left(vm::text, 8) || '-' || (1700000000 + i) END,
                CASE WHEN st = 'completed' AND t <> 'cleanup' THEN md5('dest' || i)::uuid::text END,
                at, at, at, CASE WHEN st IN ('completed', 'failed', 'cancelled') THEN at + interval '5 minutes' END,
                false, '{}'::jsonb
         FROM (SELECT i, md5('vm' || (i % $3))::uuid AS vm,
                      now() - (($4 - i) * interval '30 seconds') AS at,
                      CASE WHEN r1 < 0.45 THEN 'test' WHEN r1 < 0.90 THEN 'cleanup' ELSE 'live' END AS t,
                      CASE WHEN r2 < 0.90 THEN 'completed' WHEN r2 < 0.97 THEN 'failed'
                           WHEN r2 < 0.99 THEN 'cancelled' WHEN r2 < 0.995 THEN 'executing'
                           ELSE 'pending' END AS st
               FROM (SELECT i, random() AS r1, random() AS r2
                     FROM generate_series($1::bigint, $2::bigint - 1) AS i) g) s",
    )
    .bind(from)
    .bind(to)
    .bind(VMS)
    .bind(all)
    .execute(pool)
    .await
    .context("inserting synthetic jobs")?;
    Ok(())
}
