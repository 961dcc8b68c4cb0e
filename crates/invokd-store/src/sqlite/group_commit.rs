//! Group commit: the SQLite store's frequent writes (new jobs, claims, finishes, heartbeats, log
//! lines) that arrive while a commit is on its way to disk wait for the next one and share it,
//! so many writes cost one fsync. Each caller still gets its answer only after the transaction
//! holding its write has committed.

use chrono::{DateTime, Utc};
use invokd_core::{Job, JobId, Lease, NewJob, provider::LogLine, store::Beat, store::StoreError};
use sqlx::{SqliteConnection, SqlitePool};
use tokio::{
    sync::{mpsc, oneshot},
    time::timeout,
};

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    claim::Claim,
    job_cache::{JobCache, Wrote},
    writes::{self, Fenced},
};
use crate::sql::{jobs, queue_write, shutting_down, unavailable};

/// Writes in one transaction at most: bounds the latency a large batch adds to its first write.
const MAX_BATCH: usize = 256;
/// How long the committing task keeps the store's one writing connection while writes keep
/// coming. Taking it from the pool for every batch cost more than the batch's statements (the
/// pool hands a connection back through a task of its own, behind every request the runtime
/// has queued); the store's other writes (sweeps, keys, deliveries) wait for it meanwhile.
const HOLD: Duration = Duration::from_millis(20);
/// How long a held connection waits for the next write before it goes back to the pool.
const LINGER: Duration = Duration::from_millis(2);
/// Batches of up to this many creates keep their insert prepared, one statement per size.
const CACHED_INSERT_ROWS: usize = 64;

/// One write waiting for a commit. Each is applied by a single fenced statement (a few for log
/// lines, and for a finish with its run's last lines), so it can run again on its own if its
/// batch fails.
#[derive(Debug)]
pub(crate) enum Write {
    Insert(NewJob),
    Fenced(Fenced),
    Claim(Claim),
    Heartbeat {
        id: JobId,
        lease: Lease,
        until: DateTime<Utc>,
    },
    AppendLogs {
        id: JobId,
        lines: Vec<LogLine>,
    },
}

/// What a write did, as its caller expects it.
#[derive(Debug)]
enum Done {
    Inserted(Box<Job>),
    Applied(bool),
    Beat(Beat),
    Logged,
    Claimed(Vec<Job>),
}

impl Write {
    /// Applies the write; a new job is already in, one of `inserted` (the batch's inserts run
    /// first, as one statement).
    async fn apply(
        &self,
        conn: &mut SqliteConnection,
        inserted: &mut impl Iterator<Item = Job>,
    ) -> Result<Done, StoreError> {
        Ok(match self {
            Write::Insert(_) => Done::Inserted(Box::new(inserted.next().ok_or_else(|| {
                StoreError::Unavailable("the batch's insert returned fewer jobs".into())
            })?)),
            Write::Fenced(f) => Done::Applied(f.apply(conn).await?),
            Write::Claim(c) => Done::Claimed(c.apply(conn).await?),
            Write::Heartbeat { id, lease, until } => {
                Done::Beat(writes::heartbeat_row(conn, *id, lease, *until).await?)
            }
            Write::AppendLogs { id, lines } => {
                writes::append_log_rows(conn, *id, lines).await?;
                Done::Logged
            }
        })
    }

    /// The job this write changes by name, if any (a claim finds its jobs; an insert makes one).
    fn names(&self) -> Option<JobId> {
        match self {
            Write::Fenced(f) => Some(f.job_id()),
            Write::Heartbeat { id, .. } | Write::AppendLogs { id, .. } => Some(*id),
            Write::Insert(_) | Write::Claim(_) => None,
        }
    }

    /// What the committed write did to the jobs, as the cache hears it.
    fn wrote<'d>(&self, done: &'d Done) -> Wrote<'d> {
        match (self, done) {
            (Write::Insert(_), Done::Inserted(job)) => Wrote::Rows(std::slice::from_ref(&**job)),
            (Write::Fenced(f), Done::Applied(true)) => Wrote::Job(f.job_id()),
            (Write::Claim(_), Done::Claimed(jobs)) => Wrote::Rows(jobs),
            (Write::Heartbeat { id, .. }, Done::Beat(b)) if *b != Beat::Lost => Wrote::Job(*id),
            _ => Wrote::NoJob,
        }
    }
}

type Reply = oneshot::Sender<Result<Done, StoreError>>;
type Entry = (Write, Reply);

/// The queue of writes waiting for a commit, applied on the store's one writing connection.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Entry>,
}

impl GroupCommit {
    /// Starts the committing task on `pool`, telling `cache` what each commit changed; it ends
    /// when the last handle is dropped.
    pub(crate) fn start(pool: SqlitePool, cache: Arc<JobCache>) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(pool, cache, rx));
        Self { tx }
    }

    /// Inserts `job`, returning it once it is committed.
    pub async fn insert(&self, job: NewJob) -> Result<Job, StoreError> {
        match self.submit(Write::Insert(job)).await? {
            Done::Inserted(job) => Ok(*job),
            other => Err(mismatch(&other)),
        }
    }

    /// Applies a fenced update; true if the lease was still held and the job changed.
    pub(crate) async fn fenced(&self, f: Fenced) -> Result<bool, StoreError> {
        match self.submit(Write::Fenced(f)).await? {
            Done::Applied(done) => Ok(done),
            other => Err(mismatch(&other)),
        }
    }

    /// Claims queued jobs; claims share commits with the other writes.
    pub(crate) async fn claim(&self, claim: Claim) -> Result<Vec<Job>, StoreError> {
        match self.submit(Write::Claim(claim)).await? {
            Done::Claimed(jobs) => Ok(jobs),
            other => Err(mismatch(&other)),
        }
    }

    pub(crate) async fn heartbeat(
        &self,
        id: JobId,
        lease: Lease,
        until: DateTime<Utc>,
    ) -> Result<Beat, StoreError> {
        match self.submit(Write::Heartbeat { id, lease, until }).await? {
            Done::Beat(beat) => Ok(beat),
            other => Err(mismatch(&other)),
        }
    }

    pub(crate) async fn append_logs(
        &self,
        id: JobId,
        lines: Vec<LogLine>,
    ) -> Result<(), StoreError> {
        match self.submit(Write::AppendLogs { id, lines }).await? {
            Done::Logged => Ok(()),
            other => Err(mismatch(&other)),
        }
    }

    async fn submit(&self, write: Write) -> Result<Done, StoreError> {
        queue_write(&self.tx, write).await
    }
}

fn mismatch(done: &Done) -> StoreError {
    StoreError::Unavailable(format!(
        "the write queue answered {done:?} to another write"
    ))
}

async fn run(pool: SqlitePool, cache: Arc<JobCache>, mut rx: mpsc::Receiver<Entry>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                let e = e.to_string();
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(StoreError::Unavailable(e.clone())));
                }
                continue;
            }
        };
        let held = Instant::now();
        loop {
            commit_batch(&mut conn, &cache, &mut batch).await;
            let left = HOLD.saturating_sub(held.elapsed());
            if left.is_zero() {
                break;
            }
            // Cancel-safe: nothing is taken from the queue unless it is returned.
            match timeout(left.min(LINGER), rx.recv_many(&mut batch, MAX_BATCH)).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
}

/// Commits `batch` and answers its writers, emptying it. The cache hears of every write
/// before any writer is answered, so an answered writer's next read finds what it wrote.
async fn commit_batch(conn: &mut SqliteConnection, cache: &JobCache, batch: &mut Vec<Entry>) {
    match commit(conn, batch.iter().map(|(write, _)| write)).await {
        Ok(Applied { done, order }) => {
            // In the order the writes were applied: a claim queued before a new job's insert
            // may have taken that job, and the claim's row must be the one kept.
            for &i in &order {
                if let (Some((write, _)), Some(done)) = (batch.get(i), done.get(i)) {
                    cache.wrote(write.wrote(done));
                }
            }
            for ((_, reply), done) in batch.drain(..).zip(done) {
                let _ = reply.send(Ok(done));
            }
        }
        // One failing write must not fail the others: each on its own, with its own answer.
        Err(_) => {
            for (write, reply) in batch.drain(..) {
                let alone = commit(conn, std::iter::once(&write))
                    .await
                    .and_then(|applied| applied.done.into_iter().next().ok_or_else(shutting_down));
                if let Ok(done) = &alone {
                    cache.wrote(write.wrote(done));
                }
                let _ = reply.send(alone);
            }
        }
    }
}

/// What a batch's writes did, in the batch's order, and the order they were applied in.
struct Applied {
    done: Vec<Done>,
    order: Vec<usize>,
}

async fn commit<'w>(
    conn: &mut SqliteConnection,
    writes: impl Iterator<Item = &'w Write>,
) -> Result<Applied, StoreError> {
    let writes: Vec<&Write> = writes.collect();
    let applied = apply_all(conn, &writes).await;
    if applied.is_err() {
        // The transaction is the batch's own, not an sqlx `Transaction`: end it here, whatever
        // step failed (failing again, with none left open, changes nothing). This task is only
        // dropped mid-batch with the runtime, and then the connection closes, rolling back.
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    applied
}

/// Applies `writes` in one transaction and commits it. Each statement is a round trip to the
/// connection's thread, which waits for a core on a loaded machine (a `BEGIN` on its own took
/// 0.15–0.4 ms under create load): the `BEGIN` travels with the batch's insert, and a batch of
/// creates alone commits in that same step.
async fn apply_all(conn: &mut SqliteConnection, writes: &[&Write]) -> Result<Applied, StoreError> {
    // New jobs first, in one statement. Nothing else can name a job before its insert has
    // answered, but a claim queued before them may take them: the cache hears of the writes
    // in the order they were applied (`Applied::order`).
    let new: Vec<&NewJob> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Insert(job) => Some(job),
            _ => None,
        })
        .collect();
    let inserts_alone = new.len() == writes.len();
    if new.is_empty() {
        sqlx::query("BEGIN")
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
    } else {
        let commit = if inserts_alone { "; COMMIT" } else { "" };
        jobs::insert::<sqlx::Sqlite>("BEGIN; ", &new, commit)?
            .query()
            // Preparing a multi-row insert costs about what running it does, and batch sizes
            // repeat: each size up to a bound stays prepared.
            .persistent(new.len() <= CACHED_INSERT_ROWS)
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
    }
    let mut inserted = new
        .iter()
        .map(|j| crate::sql::as_inserted(j))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter();
    let mut order: Vec<usize> = (0..writes.len())
        .filter(|&i| matches!(writes[i], Write::Insert(_)))
        .collect();
    // Finishes wait to go in together: a statement for all their log lines and one fenced
    // update, rather than a few round trips each. They go before any later write that names
    // one of their jobs, so each job's writes keep their order.
    let mut done: Vec<Done> = writes.iter().map(|_| Done::Applied(false)).collect();
    let mut finishes: Vec<(usize, &Fenced)> = Vec::new();
    for (i, write) in writes.iter().enumerate() {
        if let Write::Fenced(f) = write
            && f.is_finish()
        {
            finishes.push((i, f));
            continue;
        }
        if write
            .names()
            .is_some_and(|id| finishes.iter().any(|(_, f)| f.job_id() == id))
        {
            finish_now(conn, &mut finishes, &mut done, &mut order).await?;
        }
        done[i] = write.apply(conn, &mut inserted).await?;
        if !matches!(write, Write::Insert(_)) {
            order.push(i);
        }
    }
    finish_now(conn, &mut finishes, &mut done, &mut order).await?;
    if !inserts_alone {
        sqlx::query("COMMIT")
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
    }
    Ok(Applied { done, order })
}

/// Applies the finishes waiting in `finishes` (with their write's index), emptying it.
async fn finish_now(
    conn: &mut SqliteConnection,
    finishes: &mut Vec<(usize, &Fenced)>,
    done: &mut [Done],
    order: &mut Vec<usize>,
) -> Result<(), StoreError> {
    if finishes.is_empty() {
        return Ok(());
    }
    let fenced: Vec<&Fenced> = finishes.iter().map(|(_, f)| *f).collect();
    let changed = writes::finish_all(conn, &fenced).await?;
    for ((i, _), changed) in finishes.drain(..).zip(changed) {
        done[i] = Done::Applied(changed);
        order.push(i);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Utc;
    use invokd_core::{JobStatus, store::ClaimRequest};
    use sqlx::Connection as _;

    use super::*;
    use crate::sqlite::job_cache::tests::new_job;

    /// A migrated database file, a connection of its own to it, and an empty cache.
    async fn setup() -> (tempfile::TempDir, SqliteConnection, JobCache) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite");
        drop(crate::SqliteStore::open(&path).await.unwrap());
        let conn = SqliteConnection::connect_with(&super::super::connect_options(&path))
            .await
            .unwrap();
        (dir, conn, JobCache::default())
    }

    fn claim() -> Write {
        let (caps, now) = (BTreeMap::new(), Utc::now());
        Write::Claim(Claim::new(&ClaimRequest {
            owner: "w",
            limit: 1,
            capacity: &caps,
            default_capacity: 1,
            now,
            lease_until: now + chrono::Duration::seconds(60),
        }))
    }

    /// Commits `writes` as one batch; the answers in the writes' order.
    async fn batch(
        conn: &mut SqliteConnection,
        cache: &JobCache,
        writes: Vec<Write>,
    ) -> Vec<Result<Done, StoreError>> {
        let (mut entries, mut answers) = (Vec::new(), Vec::new());
        for write in writes {
            let (tx, rx) = oneshot::channel();
            entries.push((write, tx));
            answers.push(rx);
        }
        commit_batch(conn, cache, &mut entries).await;
        let mut out = Vec::new();
        for rx in answers {
            out.push(rx.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_claim_queued_ahead_of_an_insert_it_took_leaves_the_claimed_row_cached() {
        let (_dir, mut conn, cache) = setup().await;
        let job = new_job();
        let answers = batch(&mut conn, &cache, vec![claim(), Write::Insert(job.clone())]).await;
        assert!(matches!(&answers[0], Ok(Done::Claimed(jobs)) if jobs.len() == 1));
        assert_eq!(cache.get(job.id).unwrap().status, JobStatus::InProgress);
    }

    #[tokio::test]
    async fn writes_committed_alone_after_a_batch_failed_still_reach_the_cache() {
        let (_dir, mut conn, cache) = setup().await;
        let job = new_job();
        batch(&mut conn, &cache, vec![Write::Insert(job.clone())]).await;
        assert_eq!(cache.get(job.id).unwrap().status, JobStatus::Queued);
        // The same job again fails the batch; the claim then commits on its own.
        let answers = batch(&mut conn, &cache, vec![Write::Insert(job.clone()), claim()]).await;
        assert!(matches!(answers[0], Err(StoreError::Conflict)));
        assert!(matches!(&answers[1], Ok(Done::Claimed(jobs)) if jobs.len() == 1));
        assert_eq!(cache.get(job.id).unwrap().status, JobStatus::InProgress);
    }

    fn finish(job: &Job, status: JobStatus, note: &str) -> Write {
        let lease = job.lease.clone().unwrap();
        Write::Fenced(Fenced::new(
            job.id,
            &lease,
            writes::Change::Finish {
                status,
                output: Some(format!("{{\"note\":\"{note}\"}}")),
                error: None,
                now: Utc::now(),
                logs: vec![line(note)],
            },
        ))
    }

    fn line(message: &str) -> LogLine {
        LogLine {
            message: message.into(),
            level: "INFO".into(),
            timestamp: Utc::now(),
        }
    }

    /// A job inserted and claimed, each in a batch of its own.
    async fn running(conn: &mut SqliteConnection, cache: &JobCache) -> Job {
        batch(conn, cache, vec![Write::Insert(new_job())]).await;
        match batch(conn, cache, vec![claim()]).await.pop() {
            Some(Ok(Done::Claimed(mut jobs))) => jobs.pop().unwrap(),
            other => panic!("no claim: {other:?}"),
        }
    }

    async fn stored(conn: &mut SqliteConnection, id: JobId) -> (String, String, Vec<String>) {
        let (status, output): (String, String) =
            sqlx::query_as("SELECT status, output FROM jobs WHERE id = ?1")
                .bind(id.to_string())
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        let lines: Vec<String> =
            sqlx::query_scalar("SELECT message FROM job_logs WHERE job_id = ?1 ORDER BY seq")
                .bind(id.to_string())
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        (status, output, lines)
    }

    #[tokio::test]
    async fn of_two_finishes_of_one_run_in_a_batch_the_first_applies_and_alone_says_so() {
        let (_dir, mut conn, cache) = setup().await;
        let job = running(&mut conn, &cache).await;
        let answers = batch(
            &mut conn,
            &cache,
            vec![
                finish(&job, JobStatus::Completed, "first"),
                finish(&job, JobStatus::Failed, "second"),
            ],
        )
        .await;
        assert!(matches!(answers[0], Ok(Done::Applied(true))));
        assert!(matches!(answers[1], Ok(Done::Applied(false))));
        let (status, output, lines) = stored(&mut conn, job.id).await;
        assert_eq!(
            (status.as_str(), output.as_str()),
            ("COMPLETED", r#"{"note":"first"}"#)
        );
        assert_eq!(lines, ["first", "second"]);
    }

    #[tokio::test]
    async fn a_write_after_a_finish_of_its_job_goes_in_after_it() {
        let (_dir, mut conn, cache) = setup().await;
        let job = running(&mut conn, &cache).await;
        let late = Write::AppendLogs {
            id: job.id,
            lines: vec![line("late")],
        };
        batch(
            &mut conn,
            &cache,
            vec![finish(&job, JobStatus::Completed, "last of the run"), late],
        )
        .await;
        let (status, _, lines) = stored(&mut conn, job.id).await;
        assert_eq!(status, "COMPLETED");
        assert_eq!(lines, ["last of the run", "late"]);
    }
}
