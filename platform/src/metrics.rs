//! What the gateway's and the workers' Prometheus endpoints share: the
//! exposition format and the histogram buckets.

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`render`]'s text (OpenMetrics, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric prefix of this product.
pub const PREFIX: &str = "failover";

/// The registry's metrics in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// Whole jobs: 1 s to about 2.3 h.
pub fn job_seconds() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

/// One step attempt: 50 ms to about 27 min.
pub fn step_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 16))
}

/// One call to an external system: 5 ms to about 82 s.
pub fn call_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}
