//! Jobs as DigitalOcean's async-invoke surface shows them.

use invokd_api::async_invoke::{Invocation, Status, Tag, WebhookAttempt, WebhookStatus};
use invokd_core::{Job, JobStatus, store::Delivery};

use super::UrlRenderer;

pub fn status(s: JobStatus) -> Status {
    match s {
        JobStatus::Queued => Status::Queued,
        JobStatus::InProgress => Status::InProgress,
        JobStatus::Completed => Status::Completed,
        JobStatus::Failed => Status::Failed,
        JobStatus::Canceled => Status::Canceled,
    }
}

pub fn invocation(job: &Job, urls: &UrlRenderer<'_>) -> Invocation {
    Invocation {
        request_id: job.id.to_string(),
        model_id: job.model_id.clone(),
        status: status(job.status),
        created_at: job.created_at,
        started_at: job.started_at,
        completed_at: job.completed_at,
        output: job.output.as_ref().map(|o| urls.output(job.id, o)),
        error: job.error.as_ref().map(|e| e.message.clone()),
        tags: job
            .tags
            .iter()
            .map(|(key, value)| Tag {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        expired_at: job.expired_at,
        webhook: job.webhook_url.as_ref().map(|url| WebhookStatus {
            url: url.clone(),
            state: "pending".into(),
            attempts: Vec::new(),
        }),
    }
}

/// The invocation with its webhook delivery as the store knows it.
pub fn with_delivery(mut inv: Invocation, delivery: Option<Delivery>) -> Invocation {
    if let (Some(w), Some(d)) = (inv.webhook.as_mut(), delivery) {
        w.state = d.state.as_str().to_owned();
        w.attempts = d
            .attempts
            .into_iter()
            .map(|a| WebhookAttempt {
                at: a.at,
                status_code: a.status_code,
                error: a.error,
            })
            .collect();
    }
    inv
}
