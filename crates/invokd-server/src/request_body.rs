//! Request bodies, before any handler reads one: a declared `Content-Length` over the route's
//! limit is refused with 413 at once (no `100 Continue` sent to a client that expects one;
//! what a client sends regardless is read and dropped for a moment, so that it sees the 413), and a body that stalls (nothing for the idle timeout) or drags on (not whole
//! within the total timeout) is cut off and answered 408. Bodies sent without a length are held
//! to the limit as they are read, by the router's `DefaultBodyLimit`.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http_body::{Frame, SizeHint};
use invokd_api::ErrorCode;
use tokio::time::{Instant, Sleep};

use crate::{error::ApiError, router, state::AppState};

/// Why a body was cut off, for the 408's message.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

/// The largest body a route takes: uploads have their own limit.
fn limit_for(state: &AppState, route: Option<&MatchedPath>) -> usize {
    if route.is_some_and(|r| router::UPLOAD_ROUTES.contains(&r.as_str())) {
        state.config.max_upload_bytes
    } else {
        state.config.max_body_bytes
    }
}

/// The layer: refuses declared lengths over the limit, and puts the body under its timeouts.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = limit_for(&state, req.extensions().get::<MatchedPath>());
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        let expects_continue = req
            .headers()
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        // A client that did not wait for a `100 Continue` is sending the body already.
        if !expects_continue {
            tokio::spawn(linger(req.into_body()));
        }
        return closing(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than this route accepts ({limit} bytes at most)"),
        ));
    }
    let timed_out = Arc::new(AtomicBool::new(false));
    let limits = &state.config.http;
    let req = req.map(|body| {
        Body::new(TimedBody {
            inner: body,
            idle_for: limits.body_idle_timeout,
            deadline_at: Instant::now() + limits.body_timeout,
            timers: None,
            timed_out: timed_out.clone(),
        })
    });
    let res = next.run(req).await;
    if timed_out.load(Ordering::Acquire) {
        // Whatever the handler made of a cut-off body, the answer is that it came too slowly.
        return closing(ApiError::new(
            ErrorCode::RequestTimeout,
            BodyTimedOut.to_string(),
        ));
    }
    res
}

/// Reads and drops what a refused client is still sending, for a moment and up to a bound, so
/// that it can read the answer: a connection closed with unread bytes is reset, and a client
/// still writing would see a broken pipe instead of the 413. Dropping the body then closes it.
async fn linger(body: Body) {
    use futures::StreamExt as _;
    const FOR: Duration = Duration::from_secs(2);
    const UP_TO: usize = 16 * 1024 * 1024;
    let mut data = body.into_data_stream();
    let _ = tokio::time::timeout(FOR, async {
        let mut read = 0;
        while let Some(Ok(chunk)) = data.next().await {
            read += chunk.len();
            if read > UP_TO {
                break;
            }
        }
    })
    .await;
}

/// An error after which the connection is closed: the rest of its body is never read.
fn closing(e: ApiError) -> Response {
    let mut res = e.into_response();
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// A body that fails if no frame comes within `idle_for`, or if it is not over by `deadline_at`.
struct TimedBody {
    inner: Body,
    idle_for: Duration,
    deadline_at: Instant,
    /// The idle and total timers, made when the body is first read (most requests have none).
    timers: Option<[Pin<Box<Sleep>>; 2]>,
    timed_out: Arc<AtomicBool>,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let [idle, deadline] = this.timers.get_or_insert_with(|| {
            [
                Box::pin(tokio::time::sleep(this.idle_for)),
                Box::pin(tokio::time::sleep_until(this.deadline_at)),
            ]
        });
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            idle.as_mut().reset(Instant::now() + this.idle_for);
            return Poll::Ready(frame);
        }
        if idle.as_mut().poll(cx).is_ready() || deadline.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
