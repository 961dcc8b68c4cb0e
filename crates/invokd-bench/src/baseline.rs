//! The baseline: a bare axum server with the same HTTP stack as invokd and no work of its own,
//! a JSON echo `POST` that answers 202 and a plain `GET`. It runs as a child process, as
//! invokd does, so both pay the same for the process boundary.

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::{
    Json, Router,
    http::StatusCode,
    routing::{get, post},
};
use futures::Stream;
use futures::StreamExt as _;
use serde_json::{Value, json};

/// One event, then an open stream with keep-alives: what an event stream costs the bare stack.
async fn events() -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let first = Event::default()
        .event("status")
        .data(r#"{"status":"QUEUED"}"#);
    let stream = futures::stream::once(async move { Ok(first) }).chain(futures::stream::pending());
    Sse::new(stream).keep_alive(KeepAlive::default())
}

pub async fn serve() -> anyhow::Result<()> {
    let app = Router::new()
        .route(
            "/echo",
            post(|Json(body): Json<Value>| async move { (StatusCode::ACCEPTED, Json(body)) }),
        )
        .route(
            "/ping",
            get(|| async { Json(json!({"status": "IN_PROGRESS"})) }),
        )
        .route("/events", get(events));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("baseline listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
