//! A streaming run as its reader sees it (fal's streaming endpoint): every partial output of
//! the job's run, in order, as the run sends it (`RunUpdates`), then the job once it has ended.
//!
//! Partial outputs reach readers in the process that runs the job; a reader elsewhere (another
//! replica) gets the ended job alone. A job whose last partial was its output (fal's own
//! stream, relayed) ends without sending it twice. A run that goes back to the queue and runs
//! again sends its partials again, from its first.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use invokd_core::{
    Job, JobId, JobStatus,
    run_updates::{RunUpdate, RunUpdates},
};
use serde_json::{Map, Value};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::state::AppState;

/// How often the reader reads its job without news of it: news is a hint, and the run may be
/// in another process.
const LOOK: Duration = Duration::from_secs(1);

/// What the reader gets next.
pub enum Step {
    /// A partial output, in the model's output shape, files as `blob:` references.
    Partial(Arc<Map<String, Value>>),
    /// The job has ended (completed, failed or cancelled): the last step, unless its output was
    /// the last partial.
    Ended(Box<Job>),
}

/// The steps of `job` from now on, until it has ended or the reader goes away (the stream is
/// dropped; the job runs on).
pub fn follow(state: AppState, job: &Job) -> impl Stream<Item = Step> + Send + use<> {
    steps(Follow::new(state, job, true))
}

/// The partial outputs of `job`'s runs in this process, as they come, for a reader that follows
/// the job's state by other means (the status streams): it never reads the store, and never
/// ends by itself.
pub fn partials(
    state: AppState,
    job: &Job,
) -> impl Stream<Item = Arc<Map<String, Value>>> + Send + use<> {
    steps(Follow::new(state, job, false)).filter_map(|step| async move {
        match step {
            Step::Partial(p) => Some(p),
            Step::Ended(_) => None,
        }
    })
}

fn steps(follow: Follow) -> impl Stream<Item = Step> + Send {
    futures::stream::unfold(follow, |mut f| async move {
        let step = f.next().await?;
        Some((step, f))
    })
}

/// The run this reader follows, and how far it has read.
struct Reading {
    run: u64,
    /// How many of the run's partials were read.
    read: u64,
    updates: broadcast::Receiver<RunUpdate>,
}

struct Follow {
    state: AppState,
    updates: RunUpdates,
    id: JobId,
    project: String,
    /// Whether it reads the job to learn that it ended (else only its runs' partials).
    reads_job: bool,
    opens: broadcast::Receiver<JobId>,
    news: broadcast::Receiver<JobId>,
    run: Option<Reading>,
    pending: VecDeque<Step>,
    /// The last partial queued, to tell whether the ended job's output was sent already.
    last_partial: Option<Arc<Map<String, Value>>>,
    ended: bool,
    look: tokio::time::Interval,
}

/// What woke the reader.
enum Woken {
    /// Look at the job in the store.
    Look,
    /// The job's run may have opened here: follow it.
    Attach,
    /// Nothing to look at (a partial was queued, or news of another job).
    Nothing,
}

impl Follow {
    fn new(state: AppState, job: &Job, reads_job: bool) -> Self {
        let signals = state.service.signals();
        let updates = signals.updates.clone();
        let mut look = tokio::time::interval(LOOK);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut follow = Self {
            // Both subscribed before the first look, so no news and no run's opening is missed.
            opens: updates.opens(),
            news: signals.events.subscribe(),
            updates,
            id: job.id,
            project: job.project.clone(),
            reads_job,
            state,
            run: None,
            pending: VecDeque::new(),
            last_partial: None,
            ended: false,
            look,
        };
        follow.attach();
        follow
    }

    async fn next(&mut self) -> Option<Step> {
        loop {
            if let Some(step) = self.pending.pop_front() {
                return Some(step);
            }
            if self.ended {
                return None;
            }
            match self.wait().await? {
                Woken::Nothing => {}
                Woken::Attach => self.attach(),
                Woken::Look => {
                    self.look_at_job().await?;
                    // A run that ended here may have been followed by another.
                    self.attach();
                }
            }
        }
    }

    /// Follows the job's run if it is open in this process, with the partials it sent so far.
    fn attach(&mut self) {
        if self.run.is_some() {
            return;
        }
        let Some(sub) = self.updates.subscribe(self.id) else {
            return;
        };
        let read = sub.partials_before + sub.partials.len() as u64;
        sub.partials.into_iter().for_each(|p| self.push_partial(p));
        self.run = Some(Reading {
            run: sub.run,
            read,
            updates: sub.updates,
        });
    }

    /// Until a partial comes (queued as a step), the run opens or ends, or the job may have
    /// changed. `None` when the process is shutting down its channels.
    async fn wait(&mut self) -> Option<Woken> {
        let attached = self.run.is_some();
        let reads_job = self.reads_job;
        let updates = async {
            match self.run.as_mut() {
                Some(r) => r.updates.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            got = updates => match got {
                Ok(RunUpdate::Partial(p)) => {
                    if let Some(r) = self.run.as_mut() {
                        r.read += 1;
                    }
                    self.push_partial(p);
                    Some(Woken::Nothing)
                }
                Ok(RunUpdate::Progress(_)) => Some(Woken::Nothing),
                Err(RecvError::Lagged(_)) => {
                    self.catch_up();
                    Some(Woken::Nothing)
                }
                // The run ended here: the job has ended, or went back to the queue.
                Err(RecvError::Closed) => {
                    self.run = None;
                    Some(Woken::Look)
                }
            },
            got = self.opens.recv(), if !attached => match got {
                Ok(id) if id != self.id => Some(Woken::Nothing),
                Ok(_) | Err(RecvError::Lagged(_)) => Some(Woken::Attach),
                Err(RecvError::Closed) => None,
            },
            got = self.news.recv(), if reads_job => match got {
                Ok(id) if id != self.id => Some(Woken::Nothing),
                Ok(_) | Err(RecvError::Lagged(_)) => Some(Woken::Look),
                Err(RecvError::Closed) => None,
            },
            _ = self.look.tick(), if reads_job => Some(Woken::Look),
        }
    }

    /// The partials of the followed run not read yet, from those the run keeps.
    fn catch_up(&mut self) {
        let Some(r) = self.run.as_mut() else {
            return;
        };
        match self.updates.partials_from(self.id, r.run, r.read) {
            Some(rest) => {
                r.read += rest.len() as u64;
                rest.into_iter().for_each(|p| self.push_partial(p));
            }
            None => self.run = None,
        }
    }

    fn push_partial(&mut self, partial: Arc<Map<String, Value>>) {
        self.last_partial = Some(partial.clone());
        self.pending.push_back(Step::Partial(partial));
    }

    /// Reads the job; once it has ended, the partials its run sent last, then the job, are the
    /// last steps. `None` when the job can no longer be read.
    async fn look_at_job(&mut self) -> Option<()> {
        if !self.reads_job {
            return Some(());
        }
        let job = self
            .state
            .service
            .reread(self.id, &self.project)
            .await
            .ok()
            .flatten()?;
        if job.status.is_terminal() {
            self.catch_up();
            let sent = job.status == JobStatus::Completed
                && job.output.is_some()
                && job.output.as_deref() == self.last_partial.as_deref();
            if !sent {
                self.pending.push_back(Step::Ended(Box::new(job)));
            }
            self.ended = true;
        }
        Some(())
    }
}
