//! The admin's workers page: the workers seen (what they run, how their jobs ended, whether
//! they are connected), refreshed live, and the worker tokens (a new one's secret shown once,
//! revoke). To a key's session it does not exist.

use askama::Template;
use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use invokd_core::workers::{CONNECTED_WITHIN, WorkerRecord, WorkerToken};

use super::{Chrome, admin_only, prefix, see_other};
use crate::{
    console::{ConsoleError, Posted, Viewer, render, view},
    routes::admin_workers::LISTED_WITHIN,
    state::AppState,
};

/// A worker as its row shows it.
pub struct WorkerRow {
    pub name: String,
    pub id: String,
    pub version: String,
    pub models: String,
    pub slots: u32,
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
    pub labels: String,
    pub last_seen: String,
    /// How long ago it was last heard from.
    pub ago: String,
    /// Heard from within `CONNECTED_WITHIN`.
    pub connected: bool,
}

impl WorkerRow {
    fn of(w: &WorkerRecord, now: DateTime<Utc>) -> Self {
        let p = &w.presence;
        let since = now - w.last_seen;
        Self {
            name: p.name.clone(),
            id: p.id.clone(),
            version: p.version.clone().unwrap_or_else(|| "-".into()),
            models: p.models.join(", "),
            slots: p.slots,
            running: w.running,
            completed: w.completed,
            failed: w.failed,
            labels: p
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
            last_seen: view::time(w.last_seen),
            ago: view::duration(since),
            connected: since.to_std().map_or(true, |s| s < CONNECTED_WITHIN),
        }
    }
}

pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub models: String,
    pub created: String,
    pub revoked: String,
}

impl From<&WorkerToken> for TokenRow {
    fn from(t: &WorkerToken) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name.clone(),
            prefix: t.prefix.clone(),
            models: t.models.as_slice().join(", "),
            created: view::time(t.created_at),
            revoked: t.revoked_at.map(view::time).unwrap_or_default(),
        }
    }
}

/// The live part: the workers seen in the last day, by name.
pub struct Seen {
    pub workers: Vec<WorkerRow>,
    pub connected: usize,
    pub at: String,
}

async fn seen(state: &AppState) -> Result<Seen, ConsoleError> {
    let now = Utc::now();
    let workers: Vec<WorkerRow> = state
        .workers
        .list_workers(LISTED_WITHIN)
        .await?
        .iter()
        .map(|w| WorkerRow::of(w, now))
        .collect();
    Ok(Seen {
        connected: workers.iter().filter(|w| w.connected).count(),
        workers,
        at: now.format("%H:%M:%S UTC").to_string(),
    })
}

#[derive(Template)]
#[template(path = "console/admin_workers.html")]
struct WorkersPage {
    chrome: Chrome,
    prefix: String,
    seen: Seen,
    tokens: Vec<TokenRow>,
    /// A token just made: its name and its secret, shown this once.
    created: Option<(String, String)>,
    error: String,
    /// The form's models as sent, kept when it is refused.
    models: String,
}

#[derive(Template)]
#[template(path = "console/admin_workers_live.html")]
struct WorkersLive {
    prefix: String,
    seen: Seen,
}

async fn workers_page(
    state: &AppState,
    viewer: &Viewer,
    created: Option<(String, String)>,
    error: String,
    models: String,
) -> Result<Response, ConsoleError> {
    let tokens = state.workers.list_tokens().await?;
    render(&WorkersPage {
        chrome: Chrome::new(state, viewer, "workers"),
        prefix: prefix(state),
        seen: seen(state).await?,
        tokens: tokens.iter().map(TokenRow::from).collect(),
        created,
        error,
        models,
    })
}

pub async fn page(State(state): State<AppState>, viewer: Viewer) -> Result<Response, ConsoleError> {
    admin_only(&viewer)?;
    workers_page(&state, &viewer, None, String::new(), String::new()).await
}

pub async fn live(State(state): State<AppState>, viewer: Viewer) -> Result<Response, ConsoleError> {
    admin_only(&viewer)?;
    render(&WorkersLive {
        prefix: prefix(&state),
        seen: seen(&state).await?,
    })
}

/// The patterns of the form's field: separated by commas, spaces or lines.
fn patterns(field: &str) -> Vec<String> {
    field
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Makes a worker token for the models named and shows its secret once.
pub async fn create(
    State(state): State<AppState>,
    posted: Posted,
) -> Result<Response, ConsoleError> {
    admin_only(&posted.viewer)?;
    let name = posted.get("name").unwrap_or_default();
    let models = posted.get("models").unwrap_or_default();
    match state.workers.create_token(name, &patterns(models)).await {
        Ok((token, secret)) => {
            workers_page(
                &state,
                &posted.viewer,
                Some((token.name, secret)),
                String::new(),
                String::new(),
            )
            .await
        }
        Err(e @ invokd_core::workers::WorkerError::Invalid(_)) => {
            let page = workers_page(
                &state,
                &posted.viewer,
                None,
                e.to_string(),
                models.to_owned(),
            )
            .await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Response, ConsoleError> {
    admin_only(&posted.viewer)?;
    state.workers.revoke_token(&id).await?;
    Ok(see_other(&format!("{}/admin/workers", prefix(&state))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_split_on_commas_spaces_and_lines() {
        assert_eq!(
            patterns(" acme/*, fal-ai/flux/schnell\nb/c "),
            ["acme/*", "fal-ai/flux/schnell", "b/c"]
        );
        assert!(patterns(" , ").is_empty());
    }

    fn seen_ago(secs: i64, now: DateTime<Utc>) -> WorkerRow {
        let record = WorkerRecord {
            presence: invokd_core::workers::WorkerPresence {
                id: "w-1".into(),
                token_id: invokd_core::ids::WorkerTokenId::generate(),
                owner: "w/t/w-1".into(),
                name: "box".into(),
                version: None,
                models: vec!["acme/*".into(), "b/c".into()],
                slots: 4,
                labels: [("gpu".to_owned(), "A100".to_owned())].into(),
            },
            first_seen: now - chrono::Duration::hours(1),
            last_seen: now - chrono::Duration::seconds(secs),
            running: 1,
            completed: 2,
            failed: 3,
        };
        WorkerRow::of(&record, now)
    }

    #[test]
    fn a_worker_not_heard_from_for_90_s_is_stale() {
        let now = Utc::now();
        let row = seen_ago(89, now);
        assert!(row.connected);
        assert_eq!(
            (
                row.version.as_str(),
                row.models.as_str(),
                row.labels.as_str()
            ),
            ("-", "acme/*, b/c", "gpu=A100")
        );
        assert_eq!(row.ago, "1 min 29 s");
        assert!(!seen_ago(90, now).connected);
        assert!(!seen_ago(3600, now).connected);
    }

    #[test]
    fn the_live_part_marks_each_worker_connected_or_stale() {
        let now = Utc::now();
        let html = WorkersLive {
            prefix: "/console".into(),
            seen: Seen {
                workers: vec![seen_ago(5, now), seen_ago(600, now)],
                connected: 1,
                at: String::new(),
            },
        }
        .render()
        .unwrap();
        let marks: Vec<&str> = html
            .split("data-connected=\"")
            .skip(1)
            .filter_map(|rest| rest.split_once("</span>"))
            .map(|(mark, _)| mark)
            .collect();
        assert_eq!(marks, ["true\">connected", "false\">stale"], "{html}");
        assert!(html.contains("1 connected"), "{html}");
    }
}
