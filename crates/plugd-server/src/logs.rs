//! Captures the `tracing` events emitted inside an execute, per trace id, for `logs/{trace_id}`.
//!
//! The executor runs every execute inside a span named `execute` with a `trace_id` field. This layer
//! remembers that trace id on the span, and appends each event inside it to that invocation's buffer;
//! the server takes the buffer after the execute and stores it with the step.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Log bytes kept per execute; the store caps the total per invocation.
const MAX_EXECUTE_LOG: usize = 16 * 1024;

/// The shared buffers, and the `tracing` layer that fills them.
#[derive(Clone, Default)]
pub struct LogCapture {
    buffers: Arc<Mutex<HashMap<String, String>>>,
}

impl std::fmt::Debug for LogCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogCapture").finish_non_exhaustive()
    }
}

struct TraceId(String);

impl LogCapture {
    /// A new, empty capture.
    pub fn new() -> LogCapture {
        LogCapture::default()
    }

    /// Takes what was captured for `trace_id`.
    pub fn take(&self, trace_id: &str) -> String {
        self.buffers.lock().unwrap_or_else(|p| p.into_inner()).remove(trace_id).unwrap_or_default()
    }

    fn append(&self, trace_id: &str, line: &str) {
        let mut buffers = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        let buffer = buffers.entry(trace_id.to_owned()).or_default();
        if buffer.len() + line.len() <= MAX_EXECUTE_LOG {
            buffer.push_str(line);
        } else if !buffer.ends_with("[truncated]\n") {
            buffer.push_str("[truncated]\n");
        }
    }
}

struct TraceIdVisitor(Option<String>);

impl Visit for TraceIdVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "trace_id" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "trace_id" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

struct LineVisitor(String);

impl Visit for LineVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S> Layer<S> for LogCapture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "execute" {
            return;
        }
        let mut visitor = TraceIdVisitor(None);
        attrs.record(&mut visitor);
        if let (Some(trace_id), Some(span)) = (visitor.0, ctx.span(id)) {
            span.extensions_mut().insert(TraceId(trace_id));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            if let Some(TraceId(trace_id)) = span.extensions().get::<TraceId>() {
                let meta = event.metadata();
                let mut line = LineVisitor(format!("[{}] {}: ", meta.level(), meta.target()));
                event.record(&mut line);
                line.0.push('\n');
                self.append(trace_id, &line.0);
                return;
            }
        }
    }
}
