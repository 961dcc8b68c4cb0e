//! fal's own stream, relayed: a model that streams runs on fal's streaming endpoint
//! (`POST {run_url}/{model}/stream`, server-sent events of outputs in the model's shape, the
//! last one final). Each event becomes a partial output of the job as it comes, its files
//! copied into invokd (`stream-<event>-<n>.<ext>`); the last is the output.
//!
//! It is sent once, as a submission is: the marker is stored before the POST, and fal's request
//! id (the answer's `x-fal-request-id`) with the queue's URLs for it right after. A stream cut
//! off before its end then follows the request on fal's queue, as a later attempt does, instead
//! of sending it again.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use invokd_core::{
    UpstreamRef,
    provider::{ProviderError, RunContext, RunOutput, RunRequest},
};
use reqwest::Method;
use serde_json::{Map, Value};

use super::{FalProvider, cancelled, client::Answer, errors, rehost, unknown_submission};

/// The longest a stream may last on the wire: the run's own time limit ends it before.
const STREAM_LIMIT: Duration = Duration::from_secs(24 * 3600);

impl FalProvider {
    /// Runs the job on fal's streaming endpoint and relays its events.
    pub(super) async fn stream(
        &self,
        req: &RunRequest,
        ctx: &RunContext,
    ) -> Result<RunOutput, ProviderError> {
        let timeout = self.before_sending("stream request", req, ctx).await?;
        let url = format!("{}/{}/stream", self.config.run_url, req.model.id);
        let mut request = self
            .client
            .queue(Method::POST, &url)
            .header("accept", "text/event-stream")
            .timeout(STREAM_LIMIT)
            .json(&req.input);
        if let Some(t) = &timeout {
            request = request.header("x-fal-request-timeout", t);
        }
        // Sent once and never stopped half-way: a request cut off is one whose fate is unknown.
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                self.client.breaker.record_failure();
                if e.is_connect() {
                    // It never reached fal: a later attempt may send it.
                    ctx.set_upstream(None).await?;
                    return Err(ProviderError::transient(
                        "upstream_unavailable",
                        format!("fal did not answer the stream request: {e}"),
                    ));
                }
                return Err(unknown_submission(&e.to_string()));
            }
        };
        let status = response.status();
        if status.is_server_error() {
            self.client.breaker.record_failure();
        } else {
            self.client.breaker.record_success();
        }
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = response.bytes().await.unwrap_or_default();
            // fal refused it: a later attempt may send it again.
            ctx.set_upstream(None).await?;
            let answer = Answer {
                status,
                headers,
                body,
            };
            return Err(errors::from_answer("stream request", &answer));
        }
        let upstream = match response
            .headers()
            .get("x-fal-request-id")
            .and_then(|v| v.to_str().ok())
        {
            Some(id) => {
                let up = self.upstream_ref(&req.model.id, id.to_owned(), &Value::Null);
                ctx.set_upstream(Some(&up)).await?;
                ctx.log("INFO", format!("streaming from fal as request {id}"))
                    .await;
                Some(up)
            }
            None => None,
        };

        let mut events = response.bytes_stream().eventsource();
        let mut last: Option<Map<String, Value>> = None;
        let mut relayed = 0usize;
        loop {
            let next = tokio::select! {
                next = events.next() => next,
                () = ctx.cancel.cancelled() => {
                    return Err(match &upstream {
                        Some(up) => self.cancel_upstream(up, ctx).await,
                        None => cancelled(),
                    });
                }
            };
            let event = match next {
                None => break,
                Some(Ok(event)) => event,
                Some(Err(e)) => return self.cut_off(upstream.as_ref(), &e.to_string(), ctx).await,
            };
            let Ok(Value::Object(mut output)) = serde_json::from_str::<Value>(&event.data) else {
                ctx.log(
                    "WARN",
                    "fal's stream sent an event that is not an output; skipped",
                )
                .await;
                continue;
            };
            if event.event == "error" || output.contains_key("error_type") {
                let detail = output.get("detail").and_then(Value::as_str);
                let error_type = output.get("error_type").and_then(Value::as_str);
                return Err(errors::from_completed(detail, error_type));
            }
            if self.config.rehost {
                let names = format!("stream-{relayed}-");
                rehost::rehost(&self.client, &mut output, ctx, &names).await?;
            }
            relayed += 1;
            // Each event is shown as it comes; the last is the output too, not sent twice.
            ctx.partial(output.clone()).await;
            last = Some(output);
        }
        match last {
            Some(output) => {
                ctx.log("INFO", format!("fal streamed {relayed} event(s)"))
                    .await;
                Ok(RunOutput { output })
            }
            None => {
                self.cut_off(upstream.as_ref(), "the stream ended without an output", ctx)
                    .await
            }
        }
    }

    /// A stream that ended before its output: the request is followed on fal's queue when its
    /// id is known, else its fate is unknown.
    async fn cut_off(
        &self,
        upstream: Option<&UpstreamRef>,
        why: &str,
        ctx: &RunContext,
    ) -> Result<RunOutput, ProviderError> {
        let Some(up) = upstream else {
            return Err(unknown_submission(&format!(
                "fal's stream stopped ({why}) and named no request id"
            )));
        };
        ctx.log(
            "WARN",
            format!("fal's stream stopped ({why}); following the request on fal's queue"),
        )
        .await;
        self.follow(up, ctx).await
    }
}
