//! A claim on SQLite, in the group commit's transaction: the models with queued jobs by a loose
//! scan of the queue's index, then one update over each model's first jobs (SQLite has no
//! `LATERAL`, and one writer, so nothing to skip).

use std::collections::BTreeMap;

use invokd_core::{
    Job,
    store::{ClaimRequest, StoreError},
};
use sqlx::SqliteConnection;

use crate::sql::{micros, rows, to_json, unavailable};

/// A claim of queued jobs under a lease, as the dispatcher asked it (owned, to wait in the
/// write queue).
#[derive(Debug)]
pub(crate) struct Claim {
    owner: String,
    lease_until: i64,
    now: i64,
    capacity: BTreeMap<String, u32>,
    default_capacity: u32,
    limit: u32,
}

/// The models with queued jobs, by a loose scan of the queue's index by model: one seek per
/// model, however long the queue.
const QUEUED_MODELS: &str = "WITH RECURSIVE models (model_id) AS (
        SELECT (SELECT model_id FROM jobs WHERE status = 'QUEUED' ORDER BY model_id LIMIT 1)
        UNION ALL
        SELECT (SELECT j.model_id FROM jobs j WHERE j.status = 'QUEUED' AND j.model_id > m.model_id
                ORDER BY j.model_id LIMIT 1)
        FROM models m WHERE m.model_id IS NOT NULL)
    SELECT model_id FROM models WHERE model_id IS NOT NULL";

/// Models whose first jobs one claim statement reads (SQLite allows 500 terms in a compound
/// SELECT).
const MODELS_PER_STATEMENT: usize = 200;

impl Claim {
    pub(crate) fn new(req: &ClaimRequest<'_>) -> Self {
        Self {
            owner: req.owner.to_owned(),
            lease_until: micros(req.lease_until),
            now: micros(req.now),
            capacity: req.capacity.clone(),
            default_capacity: req.default_capacity,
            limit: req.limit,
        }
    }

    /// The claimed jobs, in the order they should start. Each model's first jobs (as many as
    /// it may start, and no more than the claim's limit) come from its own range of the
    /// queue's index, and the best of those across models are taken, so a claim reads a few
    /// rows per model rather than the whole queue (a window over 100,000 queued jobs took a
    /// third of a second, and held the one writer all that time).
    pub(crate) async fn apply(&self, conn: &mut SqliteConnection) -> Result<Vec<Job>, StoreError> {
        if self.limit == 0 {
            return Ok(Vec::new());
        }
        let models: Vec<String> = sqlx::query_scalar(QUEUED_MODELS)
            .fetch_all(&mut *conn)
            .await
            .map_err(unavailable)?;
        let takes: Vec<(String, i64)> = models
            .into_iter()
            .filter_map(|model| {
                let cap = self
                    .capacity
                    .get(&model)
                    .copied()
                    .unwrap_or(self.default_capacity);
                let n = i64::from(cap.min(self.limit));
                (n > 0).then_some((model, n))
            })
            .collect();
        if takes.is_empty() {
            return Ok(Vec::new());
        }
        let limit = i64::from(self.limit);
        let mut claim = self.claim_update();
        if takes.len() <= MODELS_PER_STATEMENT {
            claim.push("id IN (SELECT id FROM (");
            self.push_firsts(&mut claim, &takes);
            claim
                .push(") ORDER BY priority, created_at, id LIMIT ")
                .push_bind(limit)
                .push(")");
        } else {
            // SQLite allows 500 terms in a compound SELECT: with hundreds of models (an
            // operator's catalog), each chunk's best, then the best of them all by id.
            let mut best: Vec<(i64, i64, String)> = Vec::new();
            for chunk in takes.chunks(MODELS_PER_STATEMENT) {
                let mut firsts = sqlx::QueryBuilder::new("SELECT priority, created_at, id FROM (");
                self.push_firsts(&mut firsts, chunk);
                firsts
                    .push(") ORDER BY priority, created_at, id LIMIT ")
                    .push_bind(limit);
                let rows: Vec<(i64, i64, String)> = firsts
                    .build_query_as()
                    .persistent(false)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                best.extend(rows);
            }
            best.sort();
            best.truncate(usize::try_from(self.limit).unwrap_or(usize::MAX));
            let ids: Vec<&str> = best.iter().map(|(_, _, id)| id.as_str()).collect();
            claim
                .push("status = 'QUEUED' AND id IN (SELECT value FROM json_each(")
                .push_bind(to_json(&ids)?)
                .push("))");
        }
        let rows = claim
            .push(") RETURNING *")
            .build()
            // One statement per count of models: the few a catalog holds stay prepared.
            .persistent(takes.len() <= 16)
            .fetch_all(&mut *conn)
            .await
            .map_err(unavailable)?;
        let mut jobs = rows::jobs(&rows)?;
        jobs.sort_by_key(|j| (j.priority, j.created_at, j.id));
        Ok(jobs)
    }

    /// `UPDATE jobs SET` the claim's lease `WHERE (`, for the jobs' condition to follow.
    fn claim_update(&self) -> sqlx::QueryBuilder<'static, sqlx::Sqlite> {
        let mut claim = sqlx::QueryBuilder::new(
            "UPDATE jobs SET status = 'IN_PROGRESS', attempt = attempt + 1, lease_owner = ",
        );
        claim
            .push_bind(self.owner.clone())
            .push(", lease_expires_at = ")
            .push_bind(self.lease_until)
            .push(", started_at = COALESCE(started_at, MAX(")
            .push_bind(self.now)
            .push(", created_at)) WHERE (");
        claim
    }

    /// Each model's first jobs that may start (id, priority, created_at), as many as `takes`
    /// says, each from the model's range of the queue's index.
    fn push_firsts(
        &self,
        q: &mut sqlx::QueryBuilder<'static, sqlx::Sqlite>,
        takes: &[(String, i64)],
    ) {
        for (i, (model, n)) in takes.iter().enumerate() {
            if i > 0 {
                q.push(" UNION ALL ");
            }
            q.push(
                "SELECT * FROM (SELECT id, priority, created_at FROM jobs
                 WHERE status = 'QUEUED' AND model_id = ",
            )
            .push_bind(model.clone())
            .push(" AND (start_deadline IS NULL OR start_deadline >= ")
            .push_bind(self.now)
            .push(") ORDER BY priority, created_at, id LIMIT ")
            .push_bind(*n)
            .push(")");
        }
    }
}
