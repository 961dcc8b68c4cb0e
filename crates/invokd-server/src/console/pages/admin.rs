//! The admin's pages: access keys and the projects they belong to (a new key's secret shown
//! once, revoke).
//! To a key's session they do not exist.

use askama::Template;
use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use invokd_core::keys::KeyRecord;

use super::{Chrome, admin_only, prefix, see_other};
use crate::{
    console::{ConsoleError, Posted, Viewer, render, view},
    routes::admin::key_fields,
    state::AppState,
};

pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub project: String,
    pub created: String,
    pub revoked: String,
}

impl From<&KeyRecord> for KeyRow {
    fn from(k: &KeyRecord) -> Self {
        Self {
            id: k.id.to_string(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            project: k.project.clone(),
            created: view::time(k.created_at),
            revoked: k.revoked_at.map(view::time).unwrap_or_default(),
        }
    }
}

/// A project: the keys that see its jobs.
pub struct ProjectRow {
    pub name: String,
    pub active: usize,
    pub revoked: usize,
}

/// Every project that has a key, by name.
fn projects(records: &[KeyRecord]) -> Vec<ProjectRow> {
    let mut by_name: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for k in records {
        let counts = by_name.entry(k.project.as_str()).or_default();
        if k.revoked_at.is_some() {
            counts.1 += 1;
        } else {
            counts.0 += 1;
        }
    }
    by_name
        .into_iter()
        .map(|(name, (active, revoked))| ProjectRow {
            name: name.to_owned(),
            active,
            revoked,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "console/admin_keys.html")]
struct Keys {
    chrome: Chrome,
    keys: Vec<KeyRow>,
    projects: Vec<ProjectRow>,
    /// A key just made: its name and its secret, shown this once.
    created: Option<(String, String)>,
    error: String,
}

async fn keys_page(
    state: &AppState,
    viewer: &Viewer,
    created: Option<(String, String)>,
    error: String,
) -> Result<Response, ConsoleError> {
    let records = state.service.list_keys().await?;
    render(&Keys {
        chrome: Chrome::new(state, viewer, "admin"),
        keys: records.iter().map(KeyRow::from).collect(),
        projects: projects(&records),
        created,
        error,
    })
}

pub async fn page(State(state): State<AppState>, viewer: Viewer) -> Result<Response, ConsoleError> {
    admin_only(&viewer)?;
    keys_page(&state, &viewer, None, String::new()).await
}

/// Makes a key (in a new project of its own unless one is named) and shows its secret once.
pub async fn create(
    State(state): State<AppState>,
    posted: Posted,
) -> Result<Response, ConsoleError> {
    admin_only(&posted.viewer)?;
    let project = posted.get("project").filter(|p| !p.trim().is_empty());
    let (name, project) = match key_fields(posted.get("name").unwrap_or_default(), project) {
        Ok(fields) => fields,
        Err(e) => {
            let page = keys_page(&state, &posted.viewer, None, e.message).await?;
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
        }
    };
    let (record, secret) = state.service.create_key(name, project).await?;
    keys_page(
        &state,
        &posted.viewer,
        Some((record.name, secret)),
        String::new(),
    )
    .await
}

pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Response, ConsoleError> {
    admin_only(&posted.viewer)?;
    state.service.revoke_key(&id).await?;
    Ok(see_other(&format!("{}/admin/keys", prefix(&state))))
}
