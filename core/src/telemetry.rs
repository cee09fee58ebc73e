//! The one place where logging is set up: structured `tracing` events,
//! rendered for humans or as one JSON object per line.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

use crate::config::{LogFormat, LogSettings};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log level filter {filter:?}: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a global subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the
/// configured level so an operator can raise verbosity without a new file.
pub fn init(settings: &LogSettings) -> Result<(), TelemetryError> {
    let filter_text = std::env::var("RUST_LOG").unwrap_or_else(|_| settings.level.clone());
    let filter = EnvFilter::try_new(&filter_text).map_err(|source| TelemetryError::Filter {
        filter: filter_text.clone(),
        source,
    })?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match settings.format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Human => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInstalled)
}
