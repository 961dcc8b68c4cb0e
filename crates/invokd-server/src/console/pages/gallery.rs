//! The gallery: the recent outputs of the viewer's jobs as a grid of images and players, each
//! linking to its job.

use askama::Template;
use axum::{extract::State, response::Response};
use invokd_core::{JobStatus, store::ListQuery};

use super::{Chrome, prefix};
use crate::{
    console::{ConsoleError, Viewer, render, view},
    extract::BaseUrl,
    present::UrlRenderer,
    state::AppState,
};

/// The completed jobs the gallery shows.
const JOBS: u32 = 48;

pub struct Item {
    pub job: String,
    pub model: String,
    pub prompt: String,
    pub file: view::FileView,
    pub image: bool,
}

#[derive(Template)]
#[template(path = "console/gallery.html")]
struct Gallery {
    chrome: Chrome,
    prefix: String,
    items: Vec<Item>,
}

pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    base: BaseUrl,
) -> Result<Response, ConsoleError> {
    let q = ListQuery {
        status: Some(JobStatus::Completed),
        limit: JOBS,
        ..ListQuery::default()
    };
    let page = viewer.who.list(&state, q, None).await?;
    let urls = UrlRenderer::new(&state, &base.0);
    let mut items = Vec::new();
    for job in &page.jobs {
        let (outputs, _) = view::outputs(job, &urls);
        let item = |file: &view::FileView, image: bool| Item {
            job: job.id.to_string(),
            model: job.model_id.clone(),
            prompt: view::prompt_of(job).chars().take(80).collect(),
            file: file.clone(),
            image,
        };
        items.extend(outputs.images.iter().map(|f| item(f, true)));
        items.extend(outputs.audio.iter().map(|f| item(f, false)));
    }
    render(&Gallery {
        chrome: Chrome::new(&state, &viewer, "gallery"),
        prefix: prefix(&state),
        items,
    })
}
