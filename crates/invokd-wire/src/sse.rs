//! The server-sent events of both surfaces, made in one place so that what is encoded is what
//! the fuzz target checks: DigitalOcean's `status` and `log` events, and fal's unnamed status
//! events.

use axum::response::sse::Event;
use invokd_api::{async_invoke::Invocation, fal_queue::LogEntry};
use serde_json::Value;

/// `event: log` with one log line.
pub fn log(entry: &LogEntry) -> Option<Event> {
    Event::default().event("log").json_data(entry).ok()
}

/// `event: status` with the invocation.
pub fn status(inv: &Invocation) -> Option<Event> {
    Event::default().event("status").json_data(inv).ok()
}

/// fal's status stream: each event's data is the status body as one JSON line.
pub fn fal_status(body: &Value) -> Event {
    Event::default().data(body.to_string())
}
