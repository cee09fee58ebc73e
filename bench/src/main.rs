//! `failover-bench`: what a step costs. Starts the release stack (both
//! simulators at zero latency, the gateway, the workers) on a database and a
//! queue prefix of its own, seeds a site of one-disk Linux VMs spread over
//! test networks, and measures in one run:
//!
//! - a closed loop: N test failovers from C clients submitting back to back:
//!   jobs/s, steps/s, the accept latency while the failovers run, CPU per
//!   step of the gateway and of the workers, memory idle and under load;
//! - an open loop at half that throughput: dispatch latency (a step reported
//!   → the next one claimed) and job latency;
//! - `pgbench -N` on the same Postgres, and the ratio of steps/s to its tps;
//! - the list endpoint over a large synthetic jobs table, per filter.
//!
//! Each configuration (`--profiles default,tuned`) gets a stack of its own.

mod drive;
mod list;
mod pgbench;
mod procs;
mod stack;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use serde_json::json;

use drive::quantile;
use procs::{cpu_ms, cpu_ms_of_all, rss_mib, ticks_per_second};
use stack::{BenchStack, Profile};

#[derive(Debug, Parser)]
#[command(
    name = "failover-bench",
    about = "What a failover step costs, against the release stack"
)]
struct Args {
    /// Failovers of the closed loop.
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Clients of the closed loop, each submitting back to back.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Workers of every configuration.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// How long the open loop submits, in seconds.
    #[arg(long, default_value_t = 10)]
    open_seconds: u64,
    /// Configurations to measure: `default` (the built-in configuration) and
    /// `tuned` (with `--tuned` on top).
    #[arg(long, value_delimiter = ',', default_value = "default,tuned")]
    profiles: Vec<String>,
    /// Settings of the tuned configuration, `KEY=VALUE` environment entries.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "FAILOVER_WORKER__CONCURRENCY=64,FAILOVER_CLOUDSTACK__ASYNC_POLL_INITIAL=10ms"
    )]
    tuned: Vec<String>,
    /// Synthetic jobs of the list measurement (0: skip it).
    #[arg(long, default_value_t = 1_000_000)]
    list_jobs: i64,
    /// Requests per filter combination of the list measurement.
    #[arg(long, default_value_t = 200)]
    list_requests: usize,
    /// How long pgbench runs, in seconds (0: skip it).
    #[arg(long, default_value_t = 15)]
    pgbench_seconds: u64,
    /// pgbench clients.
    #[arg(long, default_value_t = 8)]
    pgbench_clients: u32,
    /// Where the binaries are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Where each run keeps the processes' logs.
    #[arg(long, default_value = "target/bench")]
    logs: PathBuf,
    /// Jobs per second of the open loop (default: half what the closed loop reached).
    #[arg(long)]
    open_rate: Option<f64>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The Postgres server to run on (a user with the right to create
    /// databases; trust or a password in the URL).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    /// Keep each configuration's database for inspection (dropped otherwise).
    #[arg(long)]
    keep: bool,
    /// A short run (40 failovers, 3 s open loop, 20,000 list jobs, pgbench 3 s):
    /// that everything works, not figures to quote.
    #[arg(long)]
    quick: bool,
}

/// The figures of one configuration.
#[derive(Debug, Default)]
struct Figures {
    name: String,
    jobs_per_s: f64,
    steps_per_s: f64,
    accept_p50: f64,
    accept_p99: f64,
    open_rate: f64,
    open_accept_p50: f64,
    open_accept_p99: f64,
    dispatch_p50: f64,
    dispatch_p99: f64,
    job_p50: f64,
    job_p99: f64,
    gateway_cpu_ms_per_step: f64,
    worker_cpu_ms_per_step: f64,
    simulators_cpu_ms_per_step: f64,
    postgres_cpu_ms_per_step: f64,
    rabbitmq_cpu_ms_per_step: f64,
    gateway_rss_idle: f64,
    gateway_rss_load: f64,
    worker_rss_idle: f64,
    worker_rss_load: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.jobs = args.jobs.min(40);
        args.open_seconds = args.open_seconds.min(3);
        args.list_jobs = args.list_jobs.min(20_000);
        args.list_requests = args.list_requests.min(20);
        args.pgbench_seconds = args.pgbench_seconds.min(3);
    }
    stack::use_server(&args.postgres);
    let run_id = stack::run_id();
    let logs = stack::run_folder(&args.logs, &run_id)?;
    eprintln!("failover-bench run {run_id}: logs in {}", logs.display());
    let ticks = ticks_per_second();
    let mut all = Vec::new();
    for name in &args.profiles {
        let env = match name.as_str() {
            "default" => Vec::new(),
            "tuned" => args
                .tuned
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            other => anyhow::bail!("unknown profile {other:?} (default, tuned)"),
        };
        let profile = Profile {
            name: name.clone(),
            workers: args.workers,
            env,
        };
        eprintln!(
            "== {name}: {} failovers from {} clients",
            args.jobs, args.clients
        );
        all.push(measure(&args, profile, &logs, &run_id, ticks).await?);
    }
    let tps = if args.pgbench_seconds > 0 {
        eprintln!("== pgbench -N -c {}", args.pgbench_clients);
        Some(
            pgbench::tps(
                &run_id,
                args.pgbench_clients,
                Duration::from_secs(args.pgbench_seconds),
            )
            .await?,
        )
    } else {
        None
    };
    let lists = if args.list_jobs > 0 {
        eprintln!("== list over {} jobs", args.list_jobs);
        list::run(
            &args.bin_dir,
            &logs,
            &run_id,
            args.list_jobs,
            args.list_requests,
        )
        .await?
    } else {
        Vec::new()
    };
    report(&args, &all, tps, &lists);
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&as_json(&all, tps, &lists))?,
        )?;
    }
    Ok(())
}

async fn measure(
    args: &Args,
    profile: Profile,
    logs: &std::path::Path,
    run_id: &str,
    ticks: f64,
) -> anyhow::Result<Figures> {
    let name = profile.name.clone();
    let mut stack = BenchStack::start(profile, &args.bin_dir, logs, run_id).await?;
    let result = async {
        let vms = stack.add_vms(args.jobs).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let gateway = stack.gateway.pid();
        let workers: Vec<u32> = stack.workers.iter().map(|w| w.pid()).collect();
        let worker_rss = |pids: &[u32]| pids.iter().map(|&p| rss_mib(p)).fold(0.0, f64::max);
        let mut figures = Figures {
            name: name.clone(),
            gateway_rss_idle: rss_mib(gateway),
            worker_rss_idle: worker_rss(&workers),
            ..Default::default()
        };
        let cpu = |pids: &[u32]| pids.iter().map(|&p| cpu_ms(p, ticks)).sum::<f64>();
        let sims = stack.simulator_pids();
        let others = || {
            (
                cpu_ms_of_all("postgres", ticks),
                cpu_ms_of_all("beam.smp", ticks),
            )
        };
        let (gateway_cpu, worker_cpu, sims_cpu) = (cpu(&[gateway]), cpu(&workers), cpu(&sims));
        let (postgres_cpu, rabbitmq_cpu) = others();

        // Memory under load, sampled while the closed loop runs.
        let sampling = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (workers, flag) = (workers.clone(), sampling.clone());
            tokio::spawn(async move {
                let (mut g, mut w) = (0.0f64, 0.0f64);
                while !flag.load(Ordering::Relaxed) {
                    g = g.max(rss_mib(gateway));
                    w = w.max(workers.iter().map(|&p| rss_mib(p)).fold(0.0, f64::max));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (g, w)
            })
        };
        let since = drive::db_now(&stack.pool).await?;
        let closed = drive::closed_loop(&stack.http, &stack.rest, vms, args.clients).await?;
        drive::wait_terminal(&stack.pool, since, closed.job_ids.len(), Duration::from_secs(1800))
            .await?;
        sampling.store(true, Ordering::Relaxed);
        (figures.gateway_rss_load, figures.worker_rss_load) = sampler.await?;
        stack.check_alive()?;
        let recorded = drive::recorded(&stack.pool, &closed.job_ids).await?;
        let steps = recorded.executed_steps.max(1) as f64;
        figures.jobs_per_s = closed.job_ids.len() as f64 / recorded.wall_seconds;
        figures.steps_per_s = steps / recorded.wall_seconds;
        figures.accept_p50 = quantile(&closed.accept_ms, 0.5);
        figures.accept_p99 = quantile(&closed.accept_ms, 0.99);
        figures.gateway_cpu_ms_per_step = (cpu(&[gateway]) - gateway_cpu) / steps;
        figures.worker_cpu_ms_per_step = (cpu(&workers) - worker_cpu) / steps;
        figures.simulators_cpu_ms_per_step = (cpu(&sims) - sims_cpu) / steps;
        let (postgres_after, rabbitmq_after) = others();
        figures.postgres_cpu_ms_per_step = (postgres_after - postgres_cpu) / steps;
        figures.rabbitmq_cpu_ms_per_step = (rabbitmq_after - rabbitmq_cpu) / steps;
        eprintln!(
            "  closed loop: {:.1} jobs/s, {:.0} steps/s",
            figures.jobs_per_s, figures.steps_per_s
        );

        // The open loop, at half the throughput the closed loop reached.
        figures.open_rate = args.open_rate.unwrap_or(figures.jobs_per_s / 2.0);
        let count = ((figures.open_rate * args.open_seconds as f64).ceil() as usize).max(10);
        let vms = stack.add_vms(count).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let since = drive::db_now(&stack.pool).await?;
        let open = drive::open_loop(&stack.http, &stack.rest, vms, figures.open_rate).await?;
        drive::wait_terminal(&stack.pool, since, open.job_ids.len(), Duration::from_secs(1800))
            .await?;
        stack.check_alive()?;
        let recorded = drive::recorded(&stack.pool, &open.job_ids).await?;
        figures.open_accept_p50 = quantile(&open.accept_ms, 0.5);
        figures.open_accept_p99 = quantile(&open.accept_ms, 0.99);
        figures.dispatch_p50 = quantile(&recorded.dispatch_ms, 0.5);
        figures.dispatch_p99 = quantile(&recorded.dispatch_ms, 0.99);
        figures.job_p50 = quantile(&recorded.job_ms, 0.5);
        figures.job_p99 = quantile(&recorded.job_ms, 0.99);
        eprintln!(
            "  open loop at {:.1} jobs/s: dispatch p50 {:.1} ms, p99 {:.1} ms",
            figures.open_rate, figures.dispatch_p50, figures.dispatch_p99
        );
        Ok::<_, anyhow::Error>(figures)
    }
    .await;
    stack.stop(args.keep).await;
    result
}

fn report(args: &Args, all: &[Figures], tps: Option<f64>, lists: &[list::ListFigure]) {
    println!();
    println!(
        "failover-bench: {} one-disk Linux test failovers from {} clients, {} workers, simulators at zero latency",
        args.jobs, args.clients, args.workers
    );
    let header: Vec<String> = all.iter().map(|f| format!("{:>16}", f.name)).collect();
    println!("{:<44}{}", "", header.join(""));
    let row = |label: &str, value: &dyn Fn(&Figures) -> String| {
        let cells: Vec<String> = all.iter().map(|f| format!("{:>16}", value(f))).collect();
        println!("{label:<44}{}", cells.join(""));
    };
    row("jobs/s", &|f| format!("{:.1}", f.jobs_per_s));
    row("steps/s", &|f| format!("{:.0}", f.steps_per_s));
    if let Some(tps) = tps {
        row("steps/s ÷ pgbench tps", &|f| {
            format!("{:.3}", f.steps_per_s / tps)
        });
    }
    row(
        &format!("accept p50 / p99 ms ({} clients)", args.clients),
        &|f| format!("{:.1} / {:.1}", f.accept_p50, f.accept_p99),
    );
    row("open loop rate, jobs/s", &|f| format!("{:.1}", f.open_rate));
    row("  accept p50 / p99 ms", &|f| {
        format!("{:.1} / {:.1}", f.open_accept_p50, f.open_accept_p99)
    });
    row("  dispatch p50 / p99 ms", &|f| {
        format!("{:.1} / {:.1}", f.dispatch_p50, f.dispatch_p99)
    });
    row("  job latency p50 / p99 s", &|f| {
        format!("{:.2} / {:.2}", f.job_p50 / 1000.0, f.job_p99 / 1000.0)
    });
    row("gateway CPU ms per step", &|f| {
        format!("{:.3}", f.gateway_cpu_ms_per_step)
    });
    row("worker CPU ms per step (all workers)", &|f| {
        format!("{:.3}", f.worker_cpu_ms_per_step)
    });
    row("  simulators / Postgres / RabbitMQ", &|f| {
        format!(
            "{:.2} / {:.2} / {:.2}",
            f.simulators_cpu_ms_per_step, f.postgres_cpu_ms_per_step, f.rabbitmq_cpu_ms_per_step
        )
    });
    row("gateway RSS MiB idle / load", &|f| {
        format!("{:.0} / {:.0}", f.gateway_rss_idle, f.gateway_rss_load)
    });
    row("worker RSS MiB idle / load (largest)", &|f| {
        format!("{:.0} / {:.0}", f.worker_rss_idle, f.worker_rss_load)
    });
    if let [first, .., last] = all {
        println!(
            "{:<44}{:>16.2}",
            format!("{} ÷ {} throughput", first.name, last.name),
            first.steps_per_s / last.steps_per_s
        );
    }
    if let Some(tps) = tps {
        println!(
            "pgbench -N -c {} on the same Postgres: {tps:.0} tps",
            args.pgbench_clients
        );
    }
    if !lists.is_empty() {
        println!(
            "list p50 / p99 ms over {} jobs ({} requests each):",
            args.list_jobs, args.list_requests
        );
        for f in lists {
            println!(
                "  {:<22}{:>8.1} /{:>6.1}   total {}{}",
                f.filter,
                f.p50_ms,
                f.p99_ms,
                f.total,
                if f.exact { "" } else { " (estimate)" }
            );
        }
    }
}

fn as_json(all: &[Figures], tps: Option<f64>, lists: &[list::ListFigure]) -> serde_json::Value {
    json!({
        "configurations": all.iter().map(|f| json!({
            "name": f.name,
            "jobs_per_s": f.jobs_per_s,
            "steps_per_s": f.steps_per_s,
            "steps_per_pgbench_tps": tps.map(|t| f.steps_per_s / t),
            "accept_ms": {"p50": f.accept_p50, "p99": f.accept_p99},
            "open_loop": {
                "rate": f.open_rate,
                "accept_ms": {"p50": f.open_accept_p50, "p99": f.open_accept_p99},
                "dispatch_ms": {"p50": f.dispatch_p50, "p99": f.dispatch_p99},
                "job_ms": {"p50": f.job_p50, "p99": f.job_p99},
            },
            "cpu_ms_per_step": {"gateway": f.gateway_cpu_ms_per_step, "workers": f.worker_cpu_ms_per_step,
                "simulators": f.simulators_cpu_ms_per_step, "postgres": f.postgres_cpu_ms_per_step,
                "rabbitmq": f.rabbitmq_cpu_ms_per_step},
            "rss_mib": {"gateway": [f.gateway_rss_idle, f.gateway_rss_load], "worker": [f.worker_rss_idle, f.worker_rss_load]},
        })).collect::<Vec<_>>(),
        "pgbench_tps": tps,
        "list_ms": lists.iter().map(|f| json!({
            "filter": f.filter, "p50": f.p50_ms, "p99": f.p99_ms, "total": f.total, "exact": f.exact,
        })).collect::<Vec<_>>(),
    })
}
