//! One figment chain, validated once at start: the embedded defaults, then an
//! optional TOML file, then `FAILOVER_`-prefixed environment variables
//! (`__` separates levels: `FAILOVER_CLOUDSTACK__SECRET_KEY`).
//!
//! Secrets are [`SecretString`]s: their `Debug` output is redacted and they are
//! never serialized back, so a settings dump in a log cannot leak them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

/// The defaults every deployment starts from.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Environment variable prefix of every setting.
pub const ENV_PREFIX: &str = "FAILOVER_";

/// Environment variable naming an optional configuration file.
pub const CONFIG_FILE_ENV: &str = "FAILOVER_CONFIG";

/// The standard OpenTelemetry variables honoured as `telemetry.*` settings.
pub const OTEL_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const OTEL_SERVICE_NAME_ENV: &str = "OTEL_SERVICE_NAME";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path} does not exist")]
    MissingFile { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Rule(String),
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub log: LogSettings,
    pub gateway: GatewaySettings,
    pub failover: FailoverSettings,
    pub worker: WorkerSettings,
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub cloudstack: CloudStackSettings,
    pub linstor: LinstorSettings,
    pub virt_customize: VirtCustomizeSettings,
    pub telemetry: TelemetrySettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// OpenTelemetry trace export. The standard `OTEL_EXPORTER_OTLP_ENDPOINT`
/// and `OTEL_SERVICE_NAME` variables set the first two keys (the
/// `FAILOVER_TELEMETRY__*` variables win over them).
#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    /// The OTLP/gRPC collector, `http://collector:4317`; `None` (empty):
    /// no traces are exported.
    #[serde(deserialize_with = "empty_string_is_none")]
    pub otlp_endpoint: Option<String>,
    /// Empty: the binary's name (`api-gateway`, `step-worker`).
    pub service_name: String,
    /// The share of new traces that are recorded, 0 to 1; a trace that
    /// arrives sampled (an incoming `traceparent`) is always recorded.
    pub sampling_ratio: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GatewaySettings {
    pub rest_listen: SocketAddr,
    pub grpc_listen: SocketAddr,
    pub body_limit_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    #[serde(with = "humantime_serde")]
    pub timer_interval: Duration,
    pub step_max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub step_retry_initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub step_retry_max_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub estimated_test_duration: Duration,
    #[serde(with = "humantime_serde")]
    pub default_test_duration: Duration,
    pub max_operations_per_vm: u32,
    pub rate_limit_per_minute: u32,
    pub rate_limit_burst: u32,
    pub read_rate_limit_per_minute: u32,
    pub read_rate_limit_burst: u32,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub migrate_on_start: bool,
}

/// Where failed-over VMs land in CloudStack.
#[derive(Debug, Clone, Deserialize)]
pub struct FailoverSettings {
    pub zone_id: String,
    pub template_id: String,
    pub appliance_vm_id: String,
    /// Used for a NIC with no test network of its own; empty for none.
    #[serde(deserialize_with = "empty_string_is_none")]
    pub default_test_network_id: Option<String>,
    #[serde(deserialize_with = "empty_string_is_none")]
    pub default_live_network_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    pub gateway_url: Url,
    pub worker_id: String,
    pub steps: Vec<String>,
    /// Steps run at once (those against CloudStack and LINSTOR mostly wait).
    pub concurrency: u16,
    /// Of them, virt-customize runs at once (heavy on the host that sees
    /// the disks).
    pub virtio_concurrency: u16,
    /// How long a delivery waits for a free slot before the worker hands
    /// it back and stops consuming until a step ends.
    #[serde(with = "humantime_serde")]
    pub capacity_wait: Duration,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How long a cleanup waits for a graceful VM stop before forcing it.
    #[serde(with = "humantime_serde")]
    pub vm_stop_deadline: Duration,
    /// Where the worker serves `/metrics` and `/health/*`; `None` (empty)
    /// for nowhere. Port 0 picks a free port.
    #[serde(deserialize_with = "empty_addr_is_none")]
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Classic,
    Quorum,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// Holds the password, when there is one.
    pub url: SecretString,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AmqpSettings {
    /// Holds the broker password.
    pub url: SecretString,
    pub prefix: String,
    pub queue_type: QueueType,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CloudStackSettings {
    /// The API endpoint, `http(s)://HOST:8080/client/api`.
    pub endpoint: Url,
    pub api_key: String,
    pub secret_key: SecretString,
    #[serde(with = "humantime_serde")]
    pub signature_lifetime: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    pub max_retries: u32,
    #[serde(with = "humantime_serde")]
    pub retry_initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub async_poll_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub async_poll_max: Duration,
    #[serde(with = "humantime_serde")]
    pub async_job_deadline: Duration,
    #[serde(deserialize_with = "empty_path_is_none")]
    pub ca_cert_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LinstorSettings {
    /// The controller's REST base, `http(s)://HOST:3370`.
    pub endpoint: Url,
    #[serde(deserialize_with = "empty_secret_is_none")]
    pub bearer_token: Option<SecretString>,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    pub max_retries: u32,
    #[serde(with = "humantime_serde")]
    pub retry_initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    #[serde(deserialize_with = "empty_path_is_none")]
    pub ca_cert_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VirtCustomizeSettings {
    /// The program to run: `virt-customize`, or a path to it.
    pub command: PathBuf,
    /// The virtio-win ISO or an unpacked directory of it.
    pub virtio_win_path: PathBuf,
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
}

fn empty_string_is_none<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    let raw = Option::<String>::deserialize(d)?;
    Ok(raw.filter(|s| !s.trim().is_empty()))
}

fn empty_addr_is_none<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let raw = Option::<String>::deserialize(d)?;
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not an address like 0.0.0.0:9102: {e}"))
        }),
    }
}

fn empty_path_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let raw = Option::<String>::deserialize(d)?;
    Ok(raw.filter(|s| !s.trim().is_empty()).map(PathBuf::from))
}

fn empty_secret_is_none<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SecretString>, D::Error> {
    let raw = Option::<SecretString>::deserialize(d)?;
    Ok(raw.filter(|s| !s.expose_secret().trim().is_empty()))
}

impl Settings {
    /// Loads the settings: defaults, then `file` (or the file named by
    /// `FAILOVER_CONFIG`), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let from_env = std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from);
        let file = file.map(Path::to_path_buf).or(from_env);
        Self::from_figment(Self::figment(file.as_deref())?)
    }

    /// The figment chain, for callers that merge more providers on top
    /// (tests, command-line flags).
    pub fn figment(file: Option<&Path>) -> Result<Figment, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile {
                    path: path.to_path_buf(),
                });
            }
            figment = figment.merge(Toml::file(path));
        }
        Ok(figment
            .merge(Self::standard_otel_env())
            .merge(Env::prefixed(ENV_PREFIX).ignore(&["CONFIG"]).split("__")))
    }

    /// The standard OpenTelemetry variables, as `telemetry.*` keys.
    fn standard_otel_env() -> Env {
        Env::raw()
            .only(&[OTEL_ENDPOINT_ENV, OTEL_SERVICE_NAME_ENV])
            .map(|key| {
                if key == OTEL_ENDPOINT_ENV {
                    "telemetry.otlp_endpoint".into()
                } else {
                    "telemetry.service_name".into()
                }
            })
    }

    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let settings: Settings = figment.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let rule = |ok: bool, msg: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Rule(msg.to_owned()))
            }
        };
        let cs = &self.cloudstack;
        rule(
            matches!(cs.endpoint.scheme(), "http" | "https"),
            "cloudstack.endpoint must be an http or https URL",
        )?;
        rule(!cs.api_key.is_empty(), "cloudstack.api_key must be set")?;
        rule(
            !cs.secret_key.expose_secret().is_empty(),
            "cloudstack.secret_key must be set",
        )?;
        rule(
            cs.signature_lifetime >= Duration::from_secs(60),
            "cloudstack.signature_lifetime must be at least 1m",
        )?;
        rule(
            cs.async_poll_initial <= cs.async_poll_max,
            "cloudstack.async_poll_initial must not exceed async_poll_max",
        )?;
        rule(
            matches!(self.linstor.endpoint.scheme(), "http" | "https"),
            "linstor.endpoint must be an http or https URL",
        )?;
        rule(
            !self.virt_customize.deadline.is_zero(),
            "virt_customize.deadline must be positive",
        )?;
        rule(
            !self.worker.vm_stop_deadline.is_zero(),
            "worker.vm_stop_deadline must be positive",
        )?;
        rule(
            self.gateway.step_max_attempts >= 1,
            "gateway.step_max_attempts must be at least 1",
        )?;
        rule(
            self.gateway.lease_duration > self.worker.heartbeat_interval * 2,
            "gateway.lease_duration must exceed twice worker.heartbeat_interval",
        )?;
        rule(
            self.gateway.max_operations_per_vm >= 1,
            "gateway.max_operations_per_vm must be at least 1",
        )?;
        rule(
            self.gateway.rate_limit_per_minute >= 1
                && self.gateway.rate_limit_burst >= 1
                && self.gateway.read_rate_limit_per_minute >= 1
                && self.gateway.read_rate_limit_burst >= 1,
            "gateway rate limits must be at least 1",
        )?;
        rule(
            !self.gateway.default_test_duration.is_zero(),
            "gateway.default_test_duration must be positive",
        )?;
        rule(
            self.worker.concurrency >= 1,
            "worker.concurrency must be at least 1",
        )?;
        rule(
            self.worker.virtio_concurrency >= 1,
            "worker.virtio_concurrency must be at least 1",
        )?;
        rule(
            !self.amqp.prefix.is_empty()
                && self
                    .amqp
                    .prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "amqp.prefix must be letters, digits, '-', '_' or '.'",
        )?;
        rule(
            self.database.max_connections > 0,
            "database.max_connections must be positive",
        )?;
        rule(
            (0.0..=1.0).contains(&self.telemetry.sampling_ratio),
            "telemetry.sampling_ratio must be between 0 and 1",
        )?;
        rule(
            self.telemetry.otlp_endpoint.as_deref().is_none_or(|e| {
                Url::parse(e).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
            }),
            "telemetry.otlp_endpoint must be an http or https URL (the collector's OTLP/gRPC port)",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_load_and_validate() {
        Jail::expect_with(|_| {
            let s = Settings::load(None).expect("defaults are valid");
            assert_eq!(s.gateway.rest_listen.port(), 8082);
            assert_eq!(s.gateway.grpc_listen.port(), 50051);
            assert_eq!(s.cloudstack.endpoint.path(), "/client/api");
            assert_eq!(s.linstor.endpoint.port(), Some(3370));
            assert_eq!(s.cloudstack.async_poll_max, Duration::from_secs(15));
            assert!(s.linstor.bearer_token.is_none());
            assert!(s.cloudstack.ca_cert_path.is_none());
            Ok(())
        });
    }

    #[test]
    fn file_then_environment_override_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "failover.toml",
                "[cloudstack]\napi_key = \"from-file\"\nsecret_key = \"file-secret\"\n[log]\nformat = \"json\"\n",
            )?;
            jail.set_env("FAILOVER_CLOUDSTACK__SECRET_KEY", "env-secret");
            jail.set_env("FAILOVER_LINSTOR__BEARER_TOKEN", "tok");
            let s = Settings::load(Some(Path::new("failover.toml"))).expect("valid");
            assert_eq!(s.cloudstack.api_key, "from-file");
            assert_eq!(s.cloudstack.secret_key.expose_secret(), "env-secret");
            assert_eq!(s.log.format, LogFormat::Json);
            assert_eq!(
                s.linstor
                    .bearer_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_owned()),
                Some("tok".to_owned())
            );
            Ok(())
        });
    }

    #[test]
    fn config_file_named_by_environment() {
        Jail::expect_with(|jail| {
            jail.create_file("alt.toml", "[cloudstack]\napi_key = \"alt\"\n")?;
            jail.set_env("FAILOVER_CONFIG", "alt.toml");
            let s = Settings::load(None).expect("valid");
            assert_eq!(s.cloudstack.api_key, "alt");
            Ok(())
        });
    }

    #[test]
    fn telemetry_is_off_by_default_and_follows_the_standard_variables() {
        Jail::expect_with(|jail| {
            let s = Settings::load(None).expect("defaults are valid");
            assert!(s.telemetry.otlp_endpoint.is_none());
            assert_eq!(s.worker.metrics_listen.map(|a| a.port()), Some(9102));
            jail.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
            jail.set_env("OTEL_SERVICE_NAME", "gateway-eu1");
            jail.set_env("FAILOVER_WORKER__METRICS_LISTEN", "");
            let s = Settings::load(None).expect("valid");
            assert_eq!(
                s.telemetry.otlp_endpoint.as_deref(),
                Some("http://collector:4317")
            );
            assert_eq!(s.telemetry.service_name, "gateway-eu1");
            assert!(s.worker.metrics_listen.is_none());
            jail.set_env("FAILOVER_TELEMETRY__SERVICE_NAME", "from-failover-env");
            jail.set_env("FAILOVER_TELEMETRY__SAMPLING_RATIO", "0.25");
            let s = Settings::load(None).expect("valid");
            assert_eq!(s.telemetry.service_name, "from-failover-env");
            assert_eq!(s.telemetry.sampling_ratio, 0.25);
            jail.set_env("FAILOVER_TELEMETRY__SAMPLING_RATIO", "2");
            let err = Settings::load(None).expect_err("ratio above 1");
            assert!(err.to_string().contains("sampling_ratio"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        Jail::expect_with(|jail| {
            jail.set_env("FAILOVER_CLOUDSTACK__SECRET_KEY", "hunter2-cs");
            jail.set_env("FAILOVER_DATABASE__URL", "postgres://u:hunter2-db@h/db");
            jail.set_env("FAILOVER_AMQP__URL", "amqp://u:hunter2-mq@h/");
            jail.set_env("FAILOVER_LINSTOR__BEARER_TOKEN", "hunter2-ls");
            let s = Settings::load(None).expect("valid");
            let dump = format!("{s:?} {s:#?}");
            assert!(!dump.contains("hunter2"), "secret leaked: {dump}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        Jail::expect_with(|jail| {
            jail.set_env("FAILOVER_CLOUDSTACK__REQUEST_TIMEOUT", "soon");
            let err = Settings::load(None).expect_err("unparsable duration");
            assert!(
                err.to_string().to_lowercase().contains("request_timeout"),
                "{err}"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("FAILOVER_CLOUDSTACK__ENDPOINT", "ftp://x/client/api");
            let err = Settings::load(None).expect_err("bad scheme");
            assert!(err.to_string().contains("cloudstack.endpoint"), "{err}");
            Ok(())
        });
        Jail::expect_with(|_| {
            let err = Settings::load(Some(Path::new("/nonexistent/failover.toml")))
                .expect_err("missing file");
            assert!(matches!(err, ConfigError::MissingFile { .. }));
            Ok(())
        });
    }
}
