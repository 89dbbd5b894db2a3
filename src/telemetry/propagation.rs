//! W3C trace context across process boundaries: read `traceparent` from
//! incoming HTTP and gRPC requests, write it into outgoing gRPC calls, so
//! one client request is one trace across every node it touches.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Whether spans go to an exporter (set once when telemetry is installed).
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value)) {
            self.0.insert(key, value);
        }
    }
}

/// Makes the trace context in `headers` (if any) the parent of `span`.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    if !exporting() || span.is_disabled() {
        return; // no exporter: nothing to link, and the lookup is not free
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    // Fails only when the span is disabled; then there is nothing to link.
    let _ = span.set_parent(parent);
}

/// Writes the current span's trace context into an outgoing gRPC request.
pub fn inject_current(metadata: &mut MetadataMap) {
    let current = tracing::Span::current();
    if !exporting() || current.is_disabled() {
        return;
    }
    let context = current.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut MetadataInjector(metadata)));
}

/// A single `traceparent` value as a carrier (the `Replica/Calls` messages
/// carry it in a field, not in headers).
struct Traceparent<'a>(&'a mut String);

impl Injector for Traceparent<'_> {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            *self.0 = value;
        }
    }
}

struct TraceparentExtractor<'a>(&'a str);

impl Extractor for TraceparentExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent" && !self.0.is_empty()).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// The current span's W3C `traceparent`, or "" when no traces are exported.
pub fn current_traceparent() -> String {
    let mut value = String::new();
    let current = tracing::Span::current();
    if !exporting() || current.is_disabled() {
        return value;
    }
    let context = current.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut Traceparent(&mut value)));
    value
}

/// Makes the trace context in `traceparent` (if any) the parent of `span`.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str) {
    if !exporting() || span.is_disabled() || traceparent.is_empty() {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&TraceparentExtractor(traceparent)));
    let _ = span.set_parent(parent);
}
