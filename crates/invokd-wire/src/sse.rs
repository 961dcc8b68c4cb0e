//! The server-sent events of both surfaces, made in one place so that what is encoded is what
//! the fuzz target checks: DigitalOcean's `status`, `log` and `partial` events, fal's unnamed
//! status events, and the events of fal's streaming endpoint (an output each, or the failure).

use axum::response::sse::Event;
use invokd_api::{async_invoke::Invocation, fal_queue::LogEntry};
use serde_json::Value;

/// `event: log` with one log line.
pub fn log(entry: &LogEntry) -> Option<Event> {
    Event::default().event("log").json_data(entry).ok()
}

/// `event: partial` with a partial output of the job's run (a preview), in the model's shape.
pub fn partial(output: &serde_json::Map<String, Value>) -> Option<Event> {
    Event::default().event("partial").json_data(output).ok()
}

/// `event: status` with the invocation.
pub fn status(inv: &Invocation) -> Option<Event> {
    Event::default().event("status").json_data(inv).ok()
}

/// fal's status stream: each event's data is the status body as one JSON line.
pub fn fal_status(body: &Value) -> Event {
    Event::default().data(body.to_string())
}

/// fal's streaming endpoint: each event's data is one output, partial or final, as one JSON line.
pub fn fal_output(output: &serde_json::Map<String, Value>) -> Event {
    // A map of JSON values always serializes.
    Event::default().data(serde_json::to_string(output).unwrap_or_default())
}

/// fal's streaming endpoint when the run failed after the stream began: `event: error` with
/// fal's error body (`{"detail", "error_type"}`).
pub fn fal_stream_error(body: &Value) -> Event {
    Event::default().event("error").data(body.to_string())
}
