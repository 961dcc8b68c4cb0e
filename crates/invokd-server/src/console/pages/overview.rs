//! The overview: per model, what is queued and running now, what ended in the last hour, the
//! oldest queued job's age, run-time percentiles, the provider and, for models routed to
//! workers, the workers connected and their free slots; refreshed live.

use std::collections::BTreeMap;

use askama::Template;
use axum::{extract::State, response::Response};
use chrono::{Duration, Utc};
use invokd_core::{JobStatus, store::ListQuery};

use super::{Chrome, prefix, see_other};
use crate::{
    console::{ConsoleError, Viewer, render, view},
    state::AppState,
};

/// The jobs an overview reads at most, per status: a view of the newest, said so when cut.
const READ_AT_MOST: u32 = 1000;

/// One model's line.
#[derive(Debug, Default)]
pub struct ModelStats {
    pub model: String,
    /// The jobs list's query of this model's jobs.
    pub filter: String,
    pub provider: String,
    /// Of a model routed to workers: the workers connected that serve it and their free slots.
    pub workers: Option<(u64, u64)>,
    pub queued: usize,
    pub running: usize,
    pub completed: usize,
    pub failed: usize,
    pub canceled: usize,
    pub oldest_queued: String,
    pub p50: String,
    pub p95: String,
}

/// The value at quantile `q` of sorted values (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Each model's line, and its run times, as the jobs are counted.
struct Models<'a> {
    state: &'a AppState,
    lines: BTreeMap<String, (ModelStats, Vec<Duration>)>,
}

impl Models<'_> {
    fn entry(&mut self, model: &str) -> &mut (ModelStats, Vec<Duration>) {
        let state = self.state;
        self.lines.entry(model.to_owned()).or_insert_with(|| {
            (
                ModelStats {
                    model: model.to_owned(),
                    filter: url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("model", model)
                        .finish(),
                    provider: state.providers.name_for(model).to_owned(),
                    ..ModelStats::default()
                },
                Vec::new(),
            )
        })
    }
}

pub struct Stats {
    pub models: Vec<ModelStats>,
    /// Some listing reached its bound: the figures are of the newest jobs only.
    pub cut: bool,
    /// Some model is routed to workers: the overview has a column for them.
    pub has_workers: bool,
    pub at: String,
}

async fn stats(state: &AppState, viewer: &Viewer) -> Result<Stats, ConsoleError> {
    let now = Utc::now();
    let list = |status: Option<JobStatus>, since: Option<chrono::DateTime<Utc>>| ListQuery {
        status,
        created_after: since,
        limit: READ_AT_MOST,
        ..ListQuery::default()
    };
    let queued = viewer
        .who
        .list(state, list(Some(JobStatus::Queued), None), None)
        .await?;
    let running = viewer
        .who
        .list(state, list(Some(JobStatus::InProgress), None), None)
        .await?;
    let recent = viewer
        .who
        .list(state, list(None, Some(now - Duration::hours(1))), None)
        .await?;
    let cut = [&queued, &running, &recent]
        .iter()
        .any(|p| p.next_cursor.is_some());
    let mut by_model = Models {
        state,
        lines: BTreeMap::new(),
    };
    for job in &queued.jobs {
        let (m, _) = by_model.entry(&job.model_id);
        m.queued += 1;
    }
    // Newest first: the last queued job of a model is its oldest.
    for job in queued.jobs.iter().rev() {
        let (m, _) = by_model.entry(&job.model_id);
        if m.oldest_queued.is_empty() {
            m.oldest_queued = view::duration(now - job.created_at);
        }
    }
    // A job claimed between the two reads is in both: counted once, as running.
    let queued_ids: std::collections::HashSet<_> = queued.jobs.iter().map(|j| j.id).collect();
    for job in &running.jobs {
        let (m, _) = by_model.entry(&job.model_id);
        m.running += 1;
        if queued_ids.contains(&job.id) {
            m.queued -= 1;
        }
    }
    for job in &recent.jobs {
        let (m, runs) = by_model.entry(&job.model_id);
        match job.status {
            JobStatus::Completed => {
                m.completed += 1;
                if let (Some(s), Some(e)) = (job.started_at, job.completed_at) {
                    runs.push(e - s);
                }
            }
            JobStatus::Failed => m.failed += 1,
            JobStatus::Canceled => m.canceled += 1,
            _ => {}
        }
    }
    // Models routed to workers: their capacity, and a line for those with workers connected.
    let capacity = state.workers.capacity_by_model().await?;
    for (model, connected, free) in &capacity {
        if *connected > 0 || by_model.lines.contains_key(model) {
            by_model.entry(model).0.workers = Some((*connected, *free));
        }
    }
    let models = by_model
        .lines
        .into_values()
        .map(|(mut m, mut runs)| {
            runs.sort();
            let show = |d: Option<Duration>| d.map(view::duration).unwrap_or_else(|| "-".into());
            m.p50 = show(quantile(&runs, 0.5));
            m.p95 = show(quantile(&runs, 0.95));
            if m.oldest_queued.is_empty() {
                m.oldest_queued = "-".into();
            }
            m
        })
        .collect();
    Ok(Stats {
        models,
        cut,
        has_workers: !capacity.is_empty(),
        at: now.format("%H:%M:%S UTC").to_string(),
    })
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    chrome: Chrome,
    prefix: String,
    stats: Stats,
}

#[derive(Template)]
#[template(path = "console/overview_live.html")]
struct OverviewLive {
    prefix: String,
    stats: Stats,
}

/// The console's root: the overview.
pub async fn root(State(state): State<AppState>, _: Viewer) -> Response {
    see_other(&format!("{}/overview", prefix(&state)))
}

pub async fn page(State(state): State<AppState>, viewer: Viewer) -> Result<Response, ConsoleError> {
    let stats = stats(&state, &viewer).await?;
    render(&OverviewPage {
        chrome: Chrome::new(&state, &viewer, "overview"),
        prefix: prefix(&state),
        stats,
    })
}

pub async fn live(State(state): State<AppState>, viewer: Viewer) -> Result<Response, ConsoleError> {
    let stats = stats(&state, &viewer).await?;
    render(&OverviewLive {
        prefix: prefix(&state),
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let ms = |v: &[i64]| {
            v.iter()
                .map(|m| Duration::milliseconds(*m))
                .collect::<Vec<_>>()
        };
        let runs = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(quantile(&runs, 0.5), Some(Duration::milliseconds(50)));
        assert_eq!(quantile(&runs, 0.95), Some(Duration::milliseconds(95)));
        assert_eq!(quantile(&ms(&[7]), 0.95), Some(Duration::milliseconds(7)));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
