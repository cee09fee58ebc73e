//! Job fields on every span: a span that does not name the job it works for
//! (an HTTP call to CloudStack, a virt-customize run) takes `correlation_id`,
//! `job_id`, `vm_id`, `step` and `attempt` from its parent span in the same
//! process, so each exported span can be found by any of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::trace::{Span as _, SpanId, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

/// The span attributes that name a job and its step.
pub const JOB_FIELDS: [&str; 5] = ["correlation_id", "job_id", "vm_id", "step", "attempt"];

/// A span processor that copies the [`JOB_FIELDS`] a span lacks from its
/// parent. It keeps the fields of the spans still open, by span id.
#[derive(Debug, Default)]
pub(super) struct InheritJobFields {
    open: Mutex<HashMap<SpanId, Arc<[KeyValue]>>>,
}

impl SpanProcessor for InheritJobFields {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        let Some(data) = span.exported_data() else {
            return;
        };
        let mut fields: Vec<KeyValue> = data
            .attributes
            .iter()
            .filter(|kv| JOB_FIELDS.contains(&kv.key.as_str()))
            .cloned()
            .collect();
        let parent = cx.span().span_context().span_id();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(inherited) = open.get(&parent) {
            for kv in inherited.iter() {
                if !fields.iter().any(|own| own.key == kv.key) {
                    span.set_attribute(kv.clone());
                    fields.push(kv.clone());
                }
            }
        }
        if !fields.is_empty() {
            open.insert(data.span_context.span_id(), fields.into());
        }
    }

    fn on_end(&self, span: SpanData) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&span.span_context.span_id());
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}
