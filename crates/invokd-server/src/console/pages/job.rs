//! One job: its timeline, input, outputs rendered (images, audio players), logs, error and
//! webhook deliveries, refreshed live until it ends; cancel, run again (the input editable)
//! and the request as code.

use askama::Template;
use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use invokd_core::{Job, job::CancelOutcome, service::Submission};
use serde_json::Value;

use super::{Chrome, prefix, see_other};
use crate::{
    console::{
        ConsoleError, Posted, Viewer, Who, render, snippets,
        view::{self, DeliveryView, JobRow, LogView, Outputs},
    },
    extract::BaseUrl,
    present::UrlRenderer,
    state::AppState,
};

/// What changes while a job runs: the part of its page fetched again.
pub struct Live {
    pub prefix: String,
    /// For the cancel form, which goes with the status it belongs to.
    pub csrf: String,
    pub row: JobRow,
    pub queue_position: Option<u64>,
    pub cancel_requested: bool,
    pub outputs: Outputs,
    pub output_json: String,
    /// When the file links stop working.
    pub links_expire: String,
    pub logs: Vec<LogView>,
    pub error: Option<(String, String)>,
    pub delivery: Option<DeliveryView>,
}

async fn live_of(
    state: &AppState,
    viewer: &Viewer,
    job: &Job,
    base: &str,
) -> Result<Live, ConsoleError> {
    let urls = UrlRenderer::new(state, base);
    let (outputs, output) = view::outputs(job, &urls);
    let links_expire = chrono::DateTime::from_timestamp(urls.expires, 0)
        .map(view::time)
        .unwrap_or_default();
    Ok(Live {
        prefix: prefix(state),
        csrf: viewer.csrf.clone(),
        row: JobRow::of(job),
        queue_position: state.service.queue_position(job).await?,
        cancel_requested: job.cancel_requested,
        output_json: if output.is_null() {
            String::new()
        } else {
            view::pretty(&output)
        },
        outputs,
        links_expire,
        logs: state
            .service
            .logs_of(job)
            .await?
            .iter()
            .map(LogView::from)
            .collect(),
        error: job
            .error
            .as_ref()
            .map(|e| (e.error_type.clone(), e.message.clone())),
        delivery: state
            .service
            .delivery_of(job)
            .await?
            .as_ref()
            .map(DeliveryView::from),
    })
}

#[derive(Template)]
#[template(path = "console/job.html")]
struct JobPage {
    chrome: Chrome,
    live: Live,
    input_json: String,
    curl: String,
    pydo: String,
    fal: String,
    can_submit: bool,
}

#[derive(Template)]
#[template(path = "console/job_live.html")]
struct JobLive {
    live: Live,
}

pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    base: BaseUrl,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let job = viewer.who.get(&state, &id).await?;
    let input = job.input.as_ref();
    render(&JobPage {
        chrome: Chrome::new(&state, &viewer, "jobs"),
        input_json: view::pretty(input),
        curl: snippets::curl(&base.0, &job.model_id, input),
        pydo: snippets::pydo(&base.0, &job.model_id, input),
        fal: snippets::fal_client(&base.0, &job.model_id, input),
        can_submit: !viewer.is_admin(),
        live: live_of(&state, &viewer, &job, &base.0).await?,
    })
}

pub async fn live(
    State(state): State<AppState>,
    viewer: Viewer,
    base: BaseUrl,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let job = viewer.who.get(&state, &id).await?;
    render(&JobLive {
        live: live_of(&state, &viewer, &job, &base.0).await?,
    })
}

pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Response, ConsoleError> {
    if posted.viewer.who.cancel(&state, &id).await? == CancelOutcome::NotFound {
        return Err(ConsoleError::new(
            StatusCode::NOT_FOUND,
            "There is no such job.",
        ));
    }
    Ok(see_other(&format!("{}/jobs/{id}", prefix(&state))))
}

/// Submits the job's model again with the posted input (the job's own, unless edited) and its
/// tags; then the new job's page.
pub async fn rerun(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Response, ConsoleError> {
    let Who::Key(caller) = &posted.viewer.who else {
        return Err(ConsoleError::new(
            StatusCode::FORBIDDEN,
            "The admin token has no project to run jobs in: sign in with an access key.",
        ));
    };
    let job = posted.viewer.who.get(&state, &id).await?;
    let input = match posted.get("input").map(str::trim) {
        None | Some("") => job.input.as_ref().clone(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(o)) => o,
            Ok(_) => {
                return Err(ConsoleError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "The input must be a JSON object.",
                ));
            }
            Err(e) => {
                return Err(ConsoleError::new(
                    StatusCode::BAD_REQUEST,
                    format!("The input is not valid JSON: {e}"),
                ));
            }
        },
    };
    let submitted = state
        .service
        .submit(
            caller,
            Submission {
                model_id: job.model_id.clone(),
                input,
                tags: job.tags.clone(),
                priority: job.priority,
                start_within: None,
                idempotency_key: None,
                webhook_url: None,
                run_timeout: job.run_timeout,
            },
        )
        .await?;
    crate::metrics::job_submitted(&submitted.job.model_id);
    Ok(see_other(&format!(
        "{}/jobs/{}",
        prefix(&state),
        submitted.job.id
    )))
}
