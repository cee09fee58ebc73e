//! The HTTP client shared by the CloudStack and LINSTOR clients: rustls with
//! the platform's web roots plus an optional extra CA bundle, one timeout per
//! request.

use std::path::Path;
use std::time::Duration;

use backon::ExponentialBuilder;

#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("cannot read CA bundle {path}: {source}")]
    ReadCa {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid CA bundle {path}: {source}")]
    ParseCa {
        path: String,
        source: reqwest::Error,
    },
    #[error("cannot build HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

/// Builds a client with `timeout` per request and, when given, the PEM
/// certificates of `ca_cert_path` trusted in addition to the built-in roots.
pub fn build_client(
    timeout: Duration,
    ca_cert_path: Option<&Path>,
) -> Result<reqwest::Client, HttpSetupError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(30)))
        .user_agent(concat!("failover-step-worker/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_cert_path {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| HttpSetupError::ReadCa {
            path: shown.clone(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
            HttpSetupError::ParseCa {
                path: shown.clone(),
                source,
            }
        })?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder.build()?)
}

/// Exponential backoff with jitter between `initial` and `max`, at most
/// `max_retries` retries after the first try.
pub fn backoff(initial: Duration, max: Duration, max_retries: u32) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(initial)
        .with_max_delay(max)
        .with_max_times(max_retries as usize)
        .with_jitter()
}
