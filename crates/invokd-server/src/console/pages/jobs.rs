//! The jobs list: filters by status, model, tag, text in the prompt and time range, all in the URL so a view can
//! be bookmarked; live updates (which the page can pause); cancel a selection.

use askama::Template;
use axum::{
    extract::{RawQuery, State},
    http::StatusCode,
    response::Response,
};
use chrono::{DateTime, NaiveDateTime, Utc};
use invokd_core::{JobStatus, job::CancelOutcome, store::ListQuery};

use super::{Chrome, prefix, see_other};
use crate::console::{ConsoleError, Posted, Viewer, form_pairs, render, view::JobRow};

const PAGE: u32 = 50;

/// The filters of a view, as the URL gives them.
#[derive(Debug, Default, Clone)]
pub struct Filters {
    pub status: String,
    pub model: String,
    pub tag: String,
    /// Text in the prompt.
    pub text: String,
    pub since: String,
    pub until: String,
    pub cursor: String,
}

impl Filters {
    fn parse(raw: Option<&str>) -> Self {
        let mut f = Self::default();
        for (k, v) in form_pairs(raw.unwrap_or_default().as_bytes()) {
            let v = v.trim().to_owned();
            match k.as_str() {
                "status" => f.status = v,
                "model" => f.model = v,
                "tag" => f.tag = v,
                "text" => f.text = v,
                "since" => f.since = v,
                "until" => f.until = v,
                "cursor" => f.cursor = v,
                _ => {}
            }
        }
        f
    }

    /// The filters as a query string, without the cursor (each page's links add their own).
    pub fn query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("status", &self.status),
            ("model", &self.model),
            ("tag", &self.tag),
            ("text", &self.text),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        }
        q.finish()
    }

    fn list_query(&self) -> Result<ListQuery, ConsoleError> {
        let bad = |m: String| ConsoleError::new(StatusCode::BAD_REQUEST, m);
        let status = match self.status.as_str() {
            "" => None,
            s => Some(s.parse::<JobStatus>().map_err(|_| {
                bad(format!(
                    "status: {s:?} is not one of QUEUED, IN_PROGRESS, COMPLETED, FAILED, CANCELED"
                ))
            })?),
        };
        let tag = match self.tag.as_str() {
            "" => None,
            t => {
                let (k, v) = t
                    .split_once('=')
                    .ok_or_else(|| bad(format!("tag: {t:?} must be key=value")))?;
                Some((k.trim().to_owned(), v.trim().to_owned()))
            }
        };
        Ok(ListQuery {
            status,
            model_id: (!self.model.is_empty()).then(|| self.model.clone()),
            tag,
            prompt_contains: (!self.text.is_empty()).then(|| self.text.clone()),
            created_after: time("since", &self.since)?,
            created_before: time("until", &self.until)?,
            limit: PAGE,
            ..ListQuery::default()
        })
    }
}

/// A time of a filter: the browser's `datetime-local` (`2026-01-02T03:04`, seconds optional),
/// read as UTC, or RFC 3339.
fn time(field: &str, text: &str) -> Result<Option<DateTime<Utc>>, ConsoleError> {
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| Some(t.and_utc()))
        .ok_or_else(|| {
            ConsoleError::new(
                StatusCode::BAD_REQUEST,
                format!("{field}: {text:?} is not a time like 2026-01-02T03:04 (UTC)"),
            )
        })
}

/// The rows of a view and the link to the next page.
pub struct Rows {
    pub prefix: String,
    pub jobs: Vec<JobRow>,
    /// The query of the live fragment (the filters and the page's cursor).
    pub live_query: String,
    pub next: Option<String>,
    pub show_project: bool,
}

async fn rows(
    state: &crate::state::AppState,
    viewer: &Viewer,
    f: &Filters,
) -> Result<Rows, ConsoleError> {
    let q = f.list_query()?;
    let cursor = (!f.cursor.is_empty()).then_some(f.cursor.as_str());
    let page = viewer.who.list(state, q, cursor).await?;
    let base = f.query();
    let with_cursor = |c: &str| {
        let mut s = url::form_urlencoded::Serializer::new(base.clone());
        s.append_pair("cursor", c);
        s.finish()
    };
    Ok(Rows {
        prefix: prefix(state),
        jobs: page.jobs.iter().map(JobRow::of).collect(),
        live_query: if f.cursor.is_empty() {
            base.clone()
        } else {
            with_cursor(&f.cursor)
        },
        next: page.next_cursor.as_deref().map(with_cursor),
        show_project: viewer.is_admin(),
    })
}

#[derive(Template)]
#[template(path = "console/jobs.html")]
struct JobsPage {
    chrome: Chrome,
    filters: Filters,
    statuses: [&'static str; 5],
    models: Vec<String>,
    rows: Rows,
    notice: String,
}

#[derive(Template)]
#[template(path = "console/jobs_rows.html")]
struct JobsRows {
    rows: Rows,
}

pub async fn page(
    State(state): State<crate::state::AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let filters = Filters::parse(raw.as_deref());
    let rows = rows(&state, &viewer, &filters).await?;
    let notice = form_pairs(raw.unwrap_or_default().as_bytes())
        .into_iter()
        .find(|(k, _)| k == "canceled")
        .map(|(_, n)| format!("Asked to cancel {n} job(s)."))
        .unwrap_or_default();
    let mut models: Vec<String> = state
        .service
        .catalog()
        .iter()
        .map(|m| m.id.clone())
        .collect();
    models.sort();
    render(&JobsPage {
        chrome: Chrome::new(&state, &viewer, "jobs"),
        statuses: JobStatus::ALL.map(JobStatus::as_str),
        models,
        rows,
        filters,
        notice,
    })
}

pub async fn live(
    State(state): State<crate::state::AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let filters = Filters::parse(raw.as_deref());
    render(&JobsRows {
        rows: rows(&state, &viewer, &filters).await?,
    })
}

/// Cancels every selected job that is still running or queued; then the list again.
pub async fn cancel_selected(
    State(state): State<crate::state::AppState>,
    posted: Posted,
) -> Result<Response, ConsoleError> {
    let mut asked = 0;
    for id in posted.all("id") {
        match posted.viewer.who.cancel(&state, id).await? {
            CancelOutcome::Canceled | CancelOutcome::Requested => asked += 1,
            _ => {}
        }
    }
    let back = posted.get("back").unwrap_or_default();
    let sep = if back.is_empty() { "" } else { "&" };
    Ok(see_other(&format!(
        "{}/jobs?{back}{sep}canceled={asked}",
        prefix(&state)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_round_trip_through_the_url() {
        let f = Filters::parse(Some(
            "status=QUEUED&model=a%2Fb&tag=k%3Dv&since=2026-01-02T03:04&x=1",
        ));
        assert_eq!(f.model, "a/b");
        assert_eq!(
            f.query(),
            "status=QUEUED&model=a%2Fb&tag=k%3Dv&since=2026-01-02T03%3A04"
        );
        let q = f.list_query().unwrap();
        assert_eq!(q.status, Some(JobStatus::Queued));
        assert_eq!(q.tag, Some(("k".into(), "v".into())));
        assert_eq!(
            q.created_after.unwrap().to_rfc3339(),
            "2026-01-02T03:04:00+00:00"
        );
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        for (raw, field) in [
            ("status=DONE", "status"),
            ("tag=x", "tag"),
            ("until=yesterday", "until"),
        ] {
            let e = Filters::parse(Some(raw)).list_query().unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.starts_with(field), "{}", e.message);
        }
    }
}
