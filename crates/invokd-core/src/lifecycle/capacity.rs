//! How many jobs a claimer may start now: its runs in progress counted by model against a limit
//! per model and one in all. One place for the arithmetic, whoever claims.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use crate::Job;

/// What one claim may take: at most `limit` jobs, and of each model in `per_model` at most
/// that many (a model that is absent may start the claimer's whole per-model limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRoom {
    pub limit: u32,
    pub per_model: BTreeMap<String, u32>,
    pub default_per_model: u32,
}

/// Runs in progress by model, against the limits.
#[derive(Debug)]
pub struct Capacity {
    per_model_limit: u32,
    total_limit: u32,
    running: Mutex<Running>,
}

#[derive(Debug, Default)]
struct Running {
    by_model: HashMap<String, u32>,
    total: u32,
}

impl Capacity {
    /// At most `per_model_limit` runs of one model and `total_limit` in all.
    pub fn new(per_model_limit: u32, total_limit: u32) -> Self {
        Self {
            per_model_limit,
            total_limit,
            running: Mutex::new(Running::default()),
        }
    }

    /// The room for a claim now; `None` when nothing may start. `paused` models may start
    /// nothing (a provider whose upstream is failing: its jobs wait QUEUED instead of using up
    /// their attempts).
    pub fn room<'a>(&self, paused: impl IntoIterator<Item = &'a str>) -> Option<ClaimRoom> {
        let r = self.running.lock().ok()?;
        let limit = self.total_limit.saturating_sub(r.total);
        if limit == 0 {
            return None;
        }
        let mut per_model: BTreeMap<String, u32> = r
            .by_model
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(m, n)| (m.clone(), self.per_model_limit.saturating_sub(*n)))
            .collect();
        for model in paused {
            per_model.insert(model.to_owned(), 0);
        }
        Some(ClaimRoom {
            limit,
            per_model,
            default_per_model: self.per_model_limit,
        })
    }

    /// Counts claimed jobs as running.
    pub fn started(&self, jobs: &[Job]) {
        if let Ok(mut r) = self.running.lock() {
            for j in jobs {
                r.total += 1;
                *r.by_model.entry(j.model_id.clone()).or_default() += 1;
            }
        }
    }

    /// Counts one run of `model` as over.
    pub fn ended(&self, model: &str) {
        if let Ok(mut r) = self.running.lock() {
            r.total = r.total.saturating_sub(1);
            if let Some(n) = r.by_model.get_mut(model) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    r.by_model.remove(model);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::{JobStatus, KeyId, ids::JobId};

    fn job(model: &str) -> Job {
        Job {
            id: JobId::generate(),
            key_id: KeyId::generate(),
            project: "p".into(),
            model_id: model.into(),
            input: Default::default(),
            tags: Vec::new(),
            status: JobStatus::Queued,
            priority: 0,
            created_at: Utc::now(),
            started_at: None,
            completed_at: None,
            attempt: 1,
            max_attempts: 3,
            lease: None,
            output: None,
            error: None,
            start_deadline: None,
            cancel_requested: false,
            webhook_url: None,
            run_timeout: None,
            expired_at: None,
            upstream: None,
        }
    }

    #[test]
    fn an_idle_claimer_may_start_its_whole_limit_of_any_model() {
        let c = Capacity::new(4, 16);
        let room = c.room([]).unwrap();
        assert_eq!(room.limit, 16);
        assert!(room.per_model.is_empty());
        assert_eq!(room.default_per_model, 4);
    }

    #[test]
    fn running_jobs_use_up_their_models_room_and_the_total() {
        let c = Capacity::new(2, 3);
        c.started(&[job("a"), job("a")]);
        let room = c.room([]).unwrap();
        assert_eq!(room.limit, 1);
        assert_eq!(room.per_model.get("a"), Some(&0));
        c.started(&[job("b")]);
        assert_eq!(c.room([]), None, "the total is used up");
        c.ended("a");
        let room = c.room([]).unwrap();
        assert_eq!((room.limit, room.per_model.get("a")), (1, Some(&1)));
    }

    #[test]
    fn paused_models_start_nothing() {
        let c = Capacity::new(4, 16);
        let room = c.room(["fal-ai/flux/dev"]).unwrap();
        assert_eq!(room.per_model.get("fal-ai/flux/dev"), Some(&0));
    }

    #[test]
    fn an_end_never_counts_below_zero() {
        let c = Capacity::new(4, 16);
        c.ended("a");
        c.started(&[job("a")]);
        c.ended("a");
        c.ended("a");
        assert_eq!(c.room([]).unwrap().limit, 16);
    }

    #[test]
    fn claimed_jobs_are_running_whatever_their_status_field_says() {
        let c = Capacity::new(1, 1);
        let mut j = job("a");
        j.status = JobStatus::InProgress;
        c.started(&[j]);
        assert_eq!(c.room([]), None);
    }
}
