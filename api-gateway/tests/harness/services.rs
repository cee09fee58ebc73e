//! Outages of the shared RabbitMQ and Postgres. Each outage is a guard that
//! brings the service back when it is dropped — also when the test panics —
//! so a failing test never leaves the machine without its broker or its
//! database. Every test that stops one of them lives in one test binary
//! and runs its scenarios one after another.

use std::process::Command;
use std::time::Duration;

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

pub fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    run("rabbitmqctl", args)
}

fn broker_answers() -> bool {
    std::net::TcpStream::connect_timeout(&"127.0.0.1:5672".parse().unwrap(), Duration::from_secs(1))
        .is_ok()
        && rabbitmqctl(&["-q", "await_startup"]).is_ok()
}

/// RabbitMQ's application stopped (`rabbitmqctl stop_app`, the Erlang node
/// stays up) until `start` or drop.
#[derive(Debug)]
pub struct BrokerOutage {
    stopped: bool,
}

impl BrokerOutage {
    pub fn begin() -> BrokerOutage {
        rabbitmqctl(&["-q", "stop_app"]).expect("rabbitmqctl stop_app");
        BrokerOutage { stopped: true }
    }

    /// Starts the broker again and waits until it accepts connections.
    pub fn end(mut self) {
        self.start();
    }

    fn start(&mut self) {
        if !self.stopped {
            return;
        }
        let mut last = String::new();
        for _ in 0..30 {
            match rabbitmqctl(&["-q", "start_app"]) {
                Ok(_) if broker_answers() => {
                    self.stopped = false;
                    return;
                }
                Ok(_) => {}
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!("RabbitMQ does not come back: {last}");
    }
}

impl Drop for BrokerOutage {
    fn drop(&mut self) {
        self.start();
    }
}

/// A RabbitMQ application setting changed (`application:set_env`) until
/// drop, when the previous value comes back. It applies to channels opened
/// while it is set.
#[derive(Debug)]
pub struct BrokerSetting {
    key: String,
    previous: Option<String>,
}

impl BrokerSetting {
    pub fn set(key: &str, value: &str) -> BrokerSetting {
        let current = rabbitmqctl(&["eval", &format!("application:get_env(rabbit, {key}).")])
            .expect("rabbitmqctl eval");
        let previous = current
            .trim()
            .strip_prefix("{ok,")
            .and_then(|v| v.strip_suffix('}'))
            .map(str::to_owned);
        rabbitmqctl(&[
            "eval",
            &format!("application:set_env(rabbit, {key}, {value})."),
        ])
        .expect("rabbitmqctl eval set_env");
        BrokerSetting {
            key: key.to_owned(),
            previous,
        }
    }
}

impl Drop for BrokerSetting {
    fn drop(&mut self) {
        let expression = match &self.previous {
            Some(value) => format!("application:set_env(rabbit, {}, {value}).", self.key),
            None => format!("application:unset_env(rabbit, {}).", self.key),
        };
        if let Err(e) = rabbitmqctl(&["eval", &expression]) {
            eprintln!("cannot restore RabbitMQ setting {}: {e}", self.key);
        }
    }
}

/// `(messages ready, messages unacknowledged)` of every queue whose name
/// starts with `prefix`.
pub fn queue_depths(prefix: &str) -> Vec<(String, u64, u64)> {
    let out = rabbitmqctl(&[
        "-q",
        "list_queues",
        "--no-table-headers",
        "name",
        "messages_ready",
        "messages_unacknowledged",
    ])
    .expect("rabbitmqctl list_queues");
    out.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let name = parts.next()?;
            let ready = parts.next()?.parse().ok()?;
            let unacked = parts.next()?.parse().ok()?;
            name.starts_with(prefix)
                .then(|| (name.to_owned(), ready, unacked))
        })
        .collect()
}

fn postgres_version() -> String {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql: this machine's PostgreSQL cluster")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    versions.sort_by_key(|v| v.parse::<u32>().unwrap_or_default());
    versions.pop().expect("a PostgreSQL cluster")
}

fn pg_ctlcluster(action: &str) -> Result<String, String> {
    run(
        "pg_ctlcluster",
        &[
            "--skip-systemctl-redirect",
            &postgres_version(),
            "main",
            action,
        ],
    )
}

fn postgres_answers() -> bool {
    std::net::TcpStream::connect_timeout(&"127.0.0.1:5432".parse().unwrap(), Duration::from_secs(1))
        .is_ok()
}

/// The local PostgreSQL cluster stopped until `end` or drop.
#[derive(Debug)]
pub struct PostgresOutage {
    stopped: bool,
}

impl PostgresOutage {
    pub fn begin() -> PostgresOutage {
        pg_ctlcluster("stop").expect("pg_ctlcluster stop");
        PostgresOutage { stopped: true }
    }

    pub fn end(mut self) {
        self.start();
    }

    fn start(&mut self) {
        if !self.stopped {
            return;
        }
        let mut last = String::new();
        for _ in 0..30 {
            match pg_ctlcluster("start") {
                Ok(_) => {}
                Err(e) => last = e,
            }
            if postgres_answers() {
                self.stopped = false;
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!("PostgreSQL does not come back: {last}");
    }
}

impl Drop for PostgresOutage {
    fn drop(&mut self) {
        self.start();
    }
}
