//! W3C trace context across process boundaries. A span's context becomes a
//! `traceparent` (and `tracestate`) pair of strings that each transport
//! carries its own way — HTTP headers, gRPC metadata, AMQP headers, a column
//! — and a span is made the child of such a pair on the other side.
//!
//! With no collector configured the propagator is a no-op: nothing is
//! injected, nothing extracted, and these functions cost next to nothing.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header, metadata key and AMQP header of the W3C trace parent.
pub const TRACEPARENT: &str = "traceparent";
/// Vendor-specific trace state that travels with the parent.
pub const TRACESTATE: &str = "tracestate";

struct Carrier(HashMap<String, String>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The trace-context headers of `span` (empty when it is not traced).
pub fn headers(span: &tracing::Span) -> Vec<(&'static str, String)> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut carrier = Carrier(HashMap::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    [TRACEPARENT, TRACESTATE]
        .into_iter()
        .filter_map(|name| {
            let value = carrier.0.remove(name)?;
            (!value.is_empty()).then_some((name, value))
        })
        .collect()
}

/// The `traceparent` of `span`, to store with the work it starts.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    headers(span)
        .into_iter()
        .find_map(|(name, value)| (name == TRACEPARENT).then_some(value))
}

fn extract(lookup: impl Fn(&str) -> Option<String>) -> Option<opentelemetry::Context> {
    let mut carrier = Carrier(HashMap::new());
    for name in [TRACEPARENT, TRACESTATE] {
        if let Some(value) = lookup(name) {
            carrier.0.insert(name.to_owned(), value);
        }
    }
    if carrier.0.is_empty() {
        return None;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` the child of the trace context `lookup` finds (a header or
/// metadata lookup by name). Returns whether there was one. Call it before
/// the span is entered.
pub fn continue_trace(span: &tracing::Span, lookup: impl Fn(&str) -> Option<String>) -> bool {
    let Some(cx) = extract(lookup) else {
        return false;
    };
    span.set_parent(cx).is_ok()
}

/// Makes `span` the child of a stored `traceparent`.
pub fn continue_stored(span: &tracing::Span, traceparent: Option<&str>) -> bool {
    continue_trace(span, |name| {
        (name == TRACEPARENT)
            .then(|| traceparent.map(str::to_owned))
            .flatten()
    })
}

/// Puts `span` into the trace of `traceparent` (a job's trace): it stays the
/// child of the current span when that is already in the trace, and becomes
/// the child of `traceparent` otherwise (a timer, an operator's request),
/// linked to the current span. Call it before the span is entered.
pub fn join_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(target) = extract(|name| {
        (name == TRACEPARENT)
            .then(|| traceparent.map(str::to_owned))
            .flatten()
    }) else {
        return;
    };
    let current: SpanContext = tracing::Span::current()
        .context()
        .span()
        .span_context()
        .clone();
    if current.is_valid() && current.trace_id() == target.span().span_context().trace_id() {
        return;
    }
    if span.set_parent(target).is_ok() && current.is_valid() {
        span.add_link(current);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::prelude::*;

    use super::*;

    fn trace_id(span: &tracing::Span) -> String {
        span.context().span().span_context().trace_id().to_string()
    }

    /// Runs `f` with spans recorded by an in-memory OpenTelemetry pipeline.
    fn traced(f: impl FnOnce()) {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f);
    }

    #[test]
    fn a_stored_traceparent_is_continued_across_a_boundary() {
        traced(|| {
            let job = tracing::info_span!("request");
            let stored = traceparent(&job).expect("a traced span has a traceparent");
            assert!(
                stored.starts_with("00-") && stored.ends_with("-01"),
                "{stored}"
            );
            let publish = tracing::info_span!(parent: None, "publish");
            assert!(continue_stored(&publish, Some(&stored)));
            assert_eq!(trace_id(&publish), trace_id(&job));
            let sent = headers(&publish);
            let consume = tracing::info_span!(parent: None, "consume");
            assert!(continue_trace(&consume, |name| {
                sent.iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.clone())
            }));
            assert_eq!(trace_id(&consume), trace_id(&job));
            let orphan = tracing::info_span!(parent: None, "orphan");
            assert!(!continue_stored(&orphan, Some("not a traceparent")));
            assert!(!continue_stored(&orphan, None));
        });
    }

    #[test]
    fn work_started_outside_the_jobs_trace_joins_it() {
        traced(|| {
            let job = tracing::info_span!("request");
            let stored = traceparent(&job);
            // A timer, or an operator's request in a trace of its own.
            let timer = tracing::info_span!(parent: None, "lease-timer");
            let transition = timer.in_scope(|| {
                let span = tracing::info_span!("transition");
                join_trace(&span, stored.as_deref());
                span
            });
            assert_eq!(trace_id(&transition), trace_id(&job));
            assert_ne!(trace_id(&transition), trace_id(&timer));
            // A call already in the job's trace keeps its own parent.
            let call = tracing::info_span!(parent: None, "report");
            assert!(continue_stored(&call, stored.as_deref()));
            let nested = call.in_scope(|| {
                let span = tracing::info_span!("transition");
                join_trace(&span, stored.as_deref());
                span
            });
            assert_eq!(trace_id(&nested), trace_id(&job));
            assert_eq!(
                nested.context().span().span_context().trace_id(),
                call.context().span().span_context().trace_id()
            );
        });
    }
}
