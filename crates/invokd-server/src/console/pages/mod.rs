//! The console's pages, one module each; what they share: the frame around every page (paths,
//! the session's CSRF token, who is signed in) and the job service's calls as the viewer may
//! make them (a key its own project, the admin every project).

pub mod admin;
pub mod gallery;
pub mod job;
pub mod jobs;
pub mod overview;
pub mod playground;
pub mod sign_in;
pub mod workers;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use invokd_core::{
    Job,
    job::CancelOutcome,
    service::{Page, ServiceError},
    store::ListQuery,
};

use super::{
    ConsoleError, assets,
    session::{Viewer, Who},
};
use crate::state::AppState;

/// The frame of every signed-in page.
pub struct Chrome {
    /// The console's path, before every link.
    pub prefix: String,
    pub csrf: String,
    pub admin: bool,
    /// Who is signed in, in words.
    pub who: String,
    /// The navigation entry of this page.
    pub nav: &'static str,
    pub htmx: &'static str,
}

impl Chrome {
    pub fn new(state: &AppState, viewer: &Viewer, nav: &'static str) -> Self {
        Self {
            prefix: prefix(state),
            csrf: viewer.csrf.clone(),
            admin: viewer.is_admin(),
            who: match &viewer.who {
                Who::Key(c) => format!("project {}", c.project),
                Who::Admin => "admin".into(),
            },
            nav,
            htmx: assets::HTMX,
        }
    }
}

pub fn prefix(state: &AppState) -> String {
    state.config.console_path.clone().unwrap_or_default()
}

/// A 303 to `to`: where a form's action sends the browser next.
pub fn see_other(to: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

impl Who {
    pub async fn list(
        &self,
        state: &AppState,
        q: ListQuery,
        cursor: Option<&str>,
    ) -> Result<Page, ServiceError> {
        match self {
            Who::Key(c) => state.service.list(c, q, cursor).await,
            Who::Admin => state.service.list_all(q, cursor).await,
        }
    }

    pub async fn get(&self, state: &AppState, id: &str) -> Result<Job, ServiceError> {
        match self {
            Who::Key(c) => state.service.get(c, id).await,
            Who::Admin => state.service.get_any(id).await,
        }
    }

    pub async fn cancel(&self, state: &AppState, id: &str) -> Result<CancelOutcome, ServiceError> {
        match self {
            Who::Key(c) => state.service.cancel(c, id).await,
            Who::Admin => state.service.cancel_any(id).await,
        }
    }
}

/// Only the admin may see the admin pages; to anyone else they do not exist.
pub fn admin_only(viewer: &Viewer) -> Result<(), ConsoleError> {
    if viewer.is_admin() {
        Ok(())
    } else {
        Err(ConsoleError::new(
            StatusCode::NOT_FOUND,
            "There is no such page.",
        ))
    }
}
