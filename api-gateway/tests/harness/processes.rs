//! The workspace's binaries as separate processes, configured through
//! `FAILOVER_*` environment variables as `scripts/stack` does: output to a
//! log file, SIGKILL or SIGTERM on demand, restart with the same
//! configuration.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use secrecy::ExposeSecret;

use failover_platform::Settings;
use failover_platform::config::QueueType;

pub type Env = Vec<(String, String)>;

/// A free loopback address (the port is free now; it is bound later by the
/// process it is given to).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn d(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

fn var(key: &str, value: impl Into<String>) -> (String, String) {
    (format!("FAILOVER_{key}"), value.into())
}

/// The environment of a gateway replica on `settings`' database and broker
/// prefix, listening on `rest` and `grpc`.
pub fn gateway_env(settings: &Settings, rest: SocketAddr, grpc: SocketAddr) -> Env {
    let g = &settings.gateway;
    vec![
        var("DATABASE__URL", settings.database.url.expose_secret()),
        var("DATABASE__MAX_CONNECTIONS", "5"),
        var("AMQP__URL", settings.amqp.url.expose_secret()),
        var("AMQP__PREFIX", settings.amqp.prefix.clone()),
        var(
            "AMQP__QUEUE_TYPE",
            match settings.amqp.queue_type {
                QueueType::Classic => "classic",
                QueueType::Quorum => "quorum",
            },
        ),
        // The gateway checks its lease against the workers' heartbeat.
        var(
            "WORKER__HEARTBEAT_INTERVAL",
            d(settings.worker.heartbeat_interval),
        ),
        var("GATEWAY__REST_LISTEN", rest.to_string()),
        var("GATEWAY__GRPC_LISTEN", grpc.to_string()),
        var("GATEWAY__LEASE_DURATION", d(g.lease_duration)),
        var("GATEWAY__TIMER_INTERVAL", d(g.timer_interval)),
        var(
            "GATEWAY__STEP_MAX_ATTEMPTS",
            g.step_max_attempts.to_string(),
        ),
        var(
            "GATEWAY__STEP_RETRY_INITIAL_BACKOFF",
            d(g.step_retry_initial_backoff),
        ),
        var(
            "GATEWAY__STEP_RETRY_MAX_BACKOFF",
            d(g.step_retry_max_backoff),
        ),
        var(
            "GATEWAY__RATE_LIMIT_PER_MINUTE",
            g.rate_limit_per_minute.to_string(),
        ),
        var("GATEWAY__RATE_LIMIT_BURST", g.rate_limit_burst.to_string()),
        var(
            "GATEWAY__READ_RATE_LIMIT_PER_MINUTE",
            g.read_rate_limit_per_minute.to_string(),
        ),
        var(
            "GATEWAY__READ_RATE_LIMIT_BURST",
            g.read_rate_limit_burst.to_string(),
        ),
        var("LOG__FORMAT", "json"),
        var("LOG__LEVEL", "info"),
    ]
}

/// The environment of a worker process with `settings`' broker prefix,
/// clients and timings, reporting to `gateway_url` as `worker_id`.
pub fn worker_env(settings: &Settings, gateway_url: &str, worker_id: &str) -> Env {
    let w = &settings.worker;
    let cs = &settings.cloudstack;
    let ls = &settings.linstor;
    let vc = &settings.virt_customize;
    vec![
        var("AMQP__URL", settings.amqp.url.expose_secret()),
        var("AMQP__PREFIX", settings.amqp.prefix.clone()),
        var(
            "AMQP__QUEUE_TYPE",
            match settings.amqp.queue_type {
                QueueType::Classic => "classic",
                QueueType::Quorum => "quorum",
            },
        ),
        var("WORKER__GATEWAY_URL", gateway_url),
        var("WORKER__WORKER_ID", worker_id),
        var("WORKER__CONCURRENCY", w.concurrency.to_string()),
        var("WORKER__HEARTBEAT_INTERVAL", d(w.heartbeat_interval)),
        var("WORKER__SHUTDOWN_GRACE", d(w.shutdown_grace)),
        var("WORKER__VM_STOP_DEADLINE", d(w.vm_stop_deadline)),
        var("CLOUDSTACK__ENDPOINT", cs.endpoint.to_string()),
        var("CLOUDSTACK__REQUEST_TIMEOUT", d(cs.request_timeout)),
        var("CLOUDSTACK__MAX_RETRIES", cs.max_retries.to_string()),
        var(
            "CLOUDSTACK__RETRY_INITIAL_BACKOFF",
            d(cs.retry_initial_backoff),
        ),
        var("CLOUDSTACK__RETRY_MAX_BACKOFF", d(cs.retry_max_backoff)),
        var("CLOUDSTACK__ASYNC_POLL_INITIAL", d(cs.async_poll_initial)),
        var("CLOUDSTACK__ASYNC_POLL_MAX", d(cs.async_poll_max)),
        var("CLOUDSTACK__ASYNC_JOB_DEADLINE", d(cs.async_job_deadline)),
        var("LINSTOR__ENDPOINT", ls.endpoint.to_string()),
        var("LINSTOR__REQUEST_TIMEOUT", d(ls.request_timeout)),
        var("LINSTOR__MAX_RETRIES", ls.max_retries.to_string()),
        var(
            "LINSTOR__RETRY_INITIAL_BACKOFF",
            d(ls.retry_initial_backoff),
        ),
        var("LINSTOR__RETRY_MAX_BACKOFF", d(ls.retry_max_backoff)),
        var("VIRT_CUSTOMIZE__COMMAND", vc.command.display().to_string()),
        var(
            "VIRT_CUSTOMIZE__VIRTIO_WIN_PATH",
            vc.virtio_win_path.display().to_string(),
        ),
        var("VIRT_CUSTOMIZE__DEADLINE", d(vc.deadline)),
        // Workers share this host: each status listener on a free port.
        var("WORKER__METRICS_LISTEN", "127.0.0.1:0"),
        var("LOG__FORMAT", "json"),
        var("LOG__LEVEL", "info"),
    ]
}

/// One process of the stack.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Env,
    pub log: PathBuf,
    child: Option<tokio::process::Child>,
    /// How many times it was started.
    pub starts: u32,
}

impl Proc {
    /// Starts `program` with `args` and `env`; its output is appended to
    /// `<log_dir>/<name>.log`.
    pub fn start(
        name: &str,
        program: PathBuf,
        args: Vec<String>,
        env: Env,
        log_dir: &Path,
    ) -> Proc {
        let mut proc = Proc {
            name: name.to_owned(),
            program,
            args,
            env,
            log: log_dir.join(format!("{name}.log")),
            child: None,
            starts: 0,
        };
        proc.spawn();
        proc
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", self.program.display()));
        self.child = Some(child);
        self.starts += 1;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, and waits until the process is gone.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Sends SIGTERM (the process decides when to exit).
    pub fn sigterm(&self) {
        if let Some(pid) = self.pid() {
            let status = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "kill -TERM {pid} failed");
        }
    }

    /// Waits up to `within` for the process to exit; its status, or `None`
    /// if it still runs.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match tokio::time::timeout(within, child.wait()).await {
            Ok(Ok(status)) => {
                self.child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// Starts it again with the same configuration (killing it first if it
    /// still runs).
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.spawn();
    }

    /// Replaces one environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Waits until `url` answers 2xx; fails with the log when the process
    /// exits or the time is up.
    pub async fn wait_http_ok(&mut self, url: &str, within: Duration) {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(r) = http.get(url).timeout(Duration::from_secs(2)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                self.running(),
                "{} exited:\n{}",
                self.name,
                self.log_tail(20)
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} does not answer at {url} within {within:?}:\n{}",
                self.name,
                self.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Waits until `url` answers 2xx.
pub async fn wait_http_ok(url: &str, within: Duration) {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(r) = http.get(url).timeout(Duration::from_secs(2)).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} does not answer within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
