//! Connections: a cap on how many are open at once (one more is answered 503 and closed), and
//! the HTTP settings that close slow or idle ones (the request head's read timeout, which is
//! also HTTP/1's idle keep-alive timeout; HTTP/2's keep-alive pings; the TLS handshake's limit).

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum_server::accept::Accept;
use hyper_util::{rt::TokioTimer, server::conn::auto::Builder};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
};

use crate::config::HttpLimits;

/// What a cleartext client is told when every connection is taken: a 503 in both surfaces'
/// shapes at once (no request has been read, so its surface is unknown).
const FULL: &str = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 157\r\n\r\n\
{\"id\":\"service_unavailable\",\"message\":\"the server has too many open connections; retry soon\",\
\"detail\":\"the server has too many open connections; retry soon\"}";

/// The HTTP/1 and HTTP/2 settings that bound how long a connection may sit without a request.
pub fn configure(builder: &mut Builder<hyper_util::rt::TokioExecutor>, limits: &HttpLimits) {
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout);
}

/// An acceptor that lets at most `max` connections in at once, before `inner` (TLS, if any)
/// sees them; each holds its place until it closes.
#[derive(Clone)]
pub struct Capped<A> {
    inner: A,
    permits: Arc<Semaphore>,
    /// Whether a refused connection is told so in plain HTTP (not under TLS, which would need
    /// a handshake first: those are closed).
    answer_when_full: bool,
}

impl<A> Capped<A> {
    pub fn new(inner: A, max: usize, answer_when_full: bool) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max)),
            answer_when_full,
        }
    }
}

impl<A, S> Accept<TcpStream, S> for Capped<A>
where
    A: Accept<Held, S> + Clone + Send + 'static,
    A::Future: Send,
    S: Send + 'static,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(A::Stream, A::Service)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let permit = self.permits.clone().try_acquire_owned();
        let inner = self.inner.clone();
        let answer = self.answer_when_full;
        Box::pin(async move {
            let Ok(permit) = permit else {
                if answer {
                    refuse(stream).await;
                }
                return Err(io::Error::other("too many open connections"));
            };
            inner
                .accept(
                    Held {
                        stream,
                        _permit: permit,
                    },
                    service,
                )
                .await
        })
    }
}

/// Answers 503 and closes, reading what the client sent for a moment first, so that closing
/// with unread bytes does not reset the connection before the answer is read.
async fn refuse(mut stream: TcpStream) {
    const LINGER: Duration = Duration::from_millis(500);
    let _ = tokio::time::timeout(LINGER, async {
        stream.write_all(FULL.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}

/// A connection holding its place under the cap until it is dropped.
pub struct Held {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Held {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_declares_its_body_length() {
        let (head, body) = FULL.split_once("\r\n\r\n").unwrap_or_default();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{}",
            body.len()
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(json["id"], "service_unavailable");
    }
}
