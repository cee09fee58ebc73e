//! The one place where logging and tracing are set up: structured `tracing`
//! events, rendered for humans or as one JSON object per line, and — when a
//! collector is configured — OpenTelemetry spans exported over OTLP/gRPC with
//! the W3C trace-context propagator.
//!
//! Every binary's `main` calls [`init_with_tracing`] and keeps the returned
//! [`Telemetry`] until it ends (dropping it flushes the spans still
//! buffered). [`init`] sets up logging only (the simulators use it).
//! [`propagation`] carries a span's context across HTTP headers, gRPC
//! metadata, AMQP headers and the database.

pub mod propagation;
mod span_fields;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracerProvider};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogFormat, LogSettings, TelemetrySettings};

pub use span_fields::JOB_FIELDS;

/// How long a shutdown waits for the last spans to reach the collector.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log level filter {filter:?}: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a global subscriber is already installed")]
    AlreadyInstalled,
    #[error("cannot set up the OTLP exporter to {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The installed tracing pipeline. Dropping it (or [`Telemetry::shutdown`])
/// exports what is still buffered; [`Telemetry::flush`] does so and keeps
/// going. Both block: call them from a blocking context or at the very end.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports every finished span now.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(e) = provider.force_flush()
        {
            tracing::warn!(error = %e, "flushing spans failed");
        }
    }

    /// Exports what is buffered and stops the exporter.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
        {
            eprintln!("telemetry: the last spans were not exported: {e}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Installs the global subscriber for logs only. `RUST_LOG`, when set, wins
/// over the configured level so an operator can raise verbosity without a
/// new file.
pub fn init(settings: &LogSettings) -> Result<(), TelemetryError> {
    install(settings, None)
}

/// Installs logging and, when `telemetry.otlp_endpoint` is set, span export
/// to that collector as service `telemetry.service_name` (or
/// `default_service_name`). Must run inside the Tokio runtime (the gRPC
/// exporter's connection lives there).
pub fn init_with_tracing(
    log: &LogSettings,
    telemetry: &TelemetrySettings,
    default_service_name: &str,
) -> Result<Telemetry, TelemetryError> {
    let Some(endpoint) = telemetry.otlp_endpoint.as_deref() else {
        install(log, None)?;
        return Ok(Telemetry::default());
    };
    let service_name = match telemetry.service_name.trim() {
        "" => default_service_name,
        name => name,
    };
    let provider = tracer_provider(endpoint, service_name, telemetry.sampling_ratio)?;
    let tracer = provider.tracer("failover-orchestrator");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        // Spans of the transport crates (h2, hyper, tonic) are debug and
        // below; the exporter's own calls must not become spans either.
        .with_filter(LevelFilter::INFO)
        .boxed();
    install(log, Some(layer))?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    tracing::info!(
        endpoint,
        service_name,
        sampling_ratio = telemetry.sampling_ratio,
        "exporting traces"
    );
    Ok(Telemetry {
        provider: Some(provider),
    })
}

fn tracer_provider(
    endpoint: &str,
    service_name: &str,
    sampling_ratio: f64,
) -> Result<SdkTracerProvider, TelemetryError> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(10));
    if endpoint.starts_with("https:") {
        use opentelemetry_otlp::WithTonicConfig as _;
        builder = builder.with_tls_config(
            opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new().with_enabled_roots(),
        );
    }
    let exporter = builder.build().map_err(|source| TelemetryError::Exporter {
        endpoint: endpoint.to_owned(),
        source,
    })?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(span_fields::InheritJobFields::default())
        .with_span_processor(BatchSpanProcessor::builder(exporter).build())
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            sampling_ratio,
        ))))
        .with_resource(resource)
        .build())
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

fn install(settings: &LogSettings, spans: Option<BoxedLayer>) -> Result<(), TelemetryError> {
    let filter_text = std::env::var("RUST_LOG").unwrap_or_else(|_| settings.level.clone());
    let filter = EnvFilter::try_new(&filter_text).map_err(|source| TelemetryError::Filter {
        filter: filter_text.clone(),
        source,
    })?;
    // The log filter applies to log lines only, so a quiet log level does
    // not silence the traces.
    let logs: BoxedLayer = match settings.format {
        // Every span from the root down is on the line: a line logged deep
        // inside a step still carries the step span's correlation_id,
        // job_id and step.
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Human => fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let mut layers = vec![logs];
    layers.extend(spans);
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)
}
