//! Driving failovers: a closed loop (C clients, each submitting back to back)
//! and an open loop (submissions at a fixed rate, whatever the answers
//! take), with the accept latency of every request; then waiting until every
//! job is terminal, and reading what the database recorded of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;

use crate::stack::vm_id;

/// What submitting the failovers took.
#[derive(Debug, Default)]
pub struct Submitted {
    pub job_ids: Vec<String>,
    /// Milliseconds from sending a start to its 202.
    pub accept_ms: Vec<f64>,
}

async fn submit(http: &reqwest::Client, rest: &str, vm: usize) -> anyhow::Result<(String, f64)> {
    let started = Instant::now();
    let answer = http
        .post(format!("{rest}/api/v1/failover/test"))
        .json(&json!({"vm_id": vm_id(vm), "vm_name": format!("bench-vm-{vm}")}))
        .send()
        .await?;
    let status = answer.status();
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(status.as_u16() == 202, "start of VM {vm}: {status} {body}");
    let job_id = body["job_id"]
        .as_str()
        .context("the answer names the job")?
        .to_owned();
    Ok((job_id, elapsed))
}

/// `clients` clients submit test failovers of `vms`, each back to back.
pub async fn closed_loop(
    http: &reqwest::Client,
    rest: &str,
    vms: std::ops::Range<usize>,
    clients: usize,
) -> anyhow::Result<Submitted> {
    let next = Arc::new(AtomicUsize::new(vms.start));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, rest, next, end) = (http.clone(), rest.to_owned(), next.clone(), vms.end);
        tasks.push(tokio::spawn(async move {
            let mut mine = Submitted::default();
            loop {
                let vm = next.fetch_add(1, Ordering::Relaxed);
                if vm >= end {
                    return Ok::<_, anyhow::Error>(mine);
                }
                let (job_id, ms) = submit(&http, &rest, vm).await?;
                mine.job_ids.push(job_id);
                mine.accept_ms.push(ms);
            }
        }));
    }
    let mut all = Submitted::default();
    for task in tasks {
        let mine = task.await??;
        all.job_ids.extend(mine.job_ids);
        all.accept_ms.extend(mine.accept_ms);
    }
    Ok(all)
}

/// Submits test failovers of `vms` at `rate` per second, each on its own
/// task, so a slow answer never delays the next submission.
pub async fn open_loop(
    http: &reqwest::Client,
    rest: &str,
    vms: std::ops::Range<usize>,
    rate: f64,
) -> anyhow::Result<Submitted> {
    let every = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    for vm in vms {
        ticker.tick().await;
        let (http, rest) = (http.clone(), rest.to_owned());
        tasks.push(tokio::spawn(async move { submit(&http, &rest, vm).await }));
    }
    let mut all = Submitted::default();
    for task in tasks {
        let (job_id, ms) = task.await??;
        all.job_ids.push(job_id);
        all.accept_ms.push(ms);
    }
    Ok(all)
}

/// Waits until every job created since `since` is terminal (`count` of
/// them); fails when one is not within `within` or when one failed. The
/// poll reads a range of the creation index: it costs the database little
/// beside the work measured.
pub async fn wait_terminal(
    pool: &PgPool,
    since: DateTime<Utc>,
    count: usize,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let (done, failed): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status IN ('completed', 'failed', 'cancelled')),
                    count(*) FILTER (WHERE status IN ('failed', 'cancelled'))
             FROM failover_jobs WHERE created_at >= $1",
        )
        .bind(since)
        .fetch_one(pool)
        .await?;
        anyhow::ensure!(failed == 0, "{failed} of the benchmark's failovers failed");
        if done as usize >= count {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {count} failovers ended within {within:?}"
        );
        // Seldom: the figures come from the database's timestamps, and the
        // poll itself is load on the database measured.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The database's clock now.
pub async fn db_now(pool: &PgPool) -> anyhow::Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar("SELECT now()").fetch_one(pool).await?)
}

/// What the database recorded of a set of jobs.
#[derive(Debug, Default)]
pub struct Recorded {
    /// From the first job's creation to the last one's completion, seconds.
    pub wall_seconds: f64,
    /// Step attempts a worker claimed.
    pub executed_steps: i64,
    /// Milliseconds from a step's report to the claim of the next one.
    pub dispatch_ms: Vec<f64>,
    /// Milliseconds from a job's creation to its completion.
    pub job_ms: Vec<f64>,
}

pub async fn recorded(pool: &PgPool, jobs: &[String]) -> anyhow::Result<Recorded> {
    let (wall_seconds,): (f64,) = sqlx::query_as(
        "SELECT EXTRACT(EPOCH FROM max(completed_at) - min(created_at))::float8
         FROM failover_jobs WHERE job_id = ANY($1)",
    )
    .bind(jobs)
    .fetch_one(pool)
    .await?;
    let (executed_steps,): (i64,) = sqlx::query_as(
        "SELECT COALESCE(sum(attempt), 0)::bigint FROM failover_job_steps
         WHERE job_id = ANY($1) AND started_at IS NOT NULL",
    )
    .bind(jobs)
    .fetch_one(pool)
    .await?;
    let dispatch: Vec<(f64,)> = sqlx::query_as(
        "SELECT EXTRACT(EPOCH FROM next_started - completed_at)::float8 * 1000
         FROM (SELECT completed_at,
                      lead(started_at) OVER (PARTITION BY job_id ORDER BY position) AS next_started
               FROM failover_job_steps
               WHERE job_id = ANY($1) AND started_at IS NOT NULL) s
         WHERE next_started IS NOT NULL",
    )
    .bind(jobs)
    .fetch_all(pool)
    .await?;
    let job: Vec<(f64,)> = sqlx::query_as(
        "SELECT EXTRACT(EPOCH FROM completed_at - created_at)::float8 * 1000
         FROM failover_jobs WHERE job_id = ANY($1)",
    )
    .bind(jobs)
    .fetch_all(pool)
    .await?;
    Ok(Recorded {
        wall_seconds,
        executed_steps,
        dispatch_ms: dispatch.into_iter().map(|(ms,)| ms).collect(),
        job_ms: job.into_iter().map(|(ms,)| ms).collect(),
    })
}

/// The `q` quantile (0..=1) of `values`, by the nearest rank.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_are_nearest_ranks() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
