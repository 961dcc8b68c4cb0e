//! RunPod's worker protocol over the same lifecycle as invokd's own (docs/workers.md, "RunPod
//! workers"): an unmodified `runpod` SDK worker takes, pings, reports and finishes jobs through
//! the calls of [`WorkerService`]. RunPod's calls name a job by an id alone, so the id handed
//! out names the attempt (`<job id>.<attempt>`) and the worker (`RUNPOD_POD_ID`) is in every
//! URL: together with the token they make the lease, and a late call of a superseded attempt is
//! fenced like any other. The jobs each worker holds are remembered here, for its stop channel.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    str::FromStr,
    time::{Duration, Instant},
};

use chrono::Utc;
use serde_json::Value;

use super::{
    HeldBeat, HeldRun, Hello, Taken, WorkerError, WorkerLease, WorkerService, WorkerToken,
    owner_for, service::valid_worker_id,
};
use crate::{JobStatus, ids::JobId, provider::LogLine, run_updates::Progress};

/// How often a stop poll looks at the jobs of its worker.
const STOP_POLL: Duration = Duration::from_millis(250);
/// A RunPod worker not heard of for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// A job's id as RunPod's worker sees it: the job and its attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunpodJobId {
    pub job: JobId,
    pub attempt: u32,
}

impl fmt::Display for RunpodJobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.job, self.attempt)
    }
}

impl FromStr for RunpodJobId {
    type Err = WorkerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            WorkerError::NotFound(format!(
                "job {s:?} not found: RunPod job ids here are <job id>.<attempt>, as job-take gave them"
            ))
        };
        let (job, attempt) = s.rsplit_once('.').ok_or_else(bad)?;
        Ok(Self {
            job: job.parse().map_err(|_| bad())?,
            attempt: attempt.parse().map_err(|_| bad())?,
        })
    }
}

/// What the gateway remembers of RunPod workers, per process.
#[derive(Default)]
pub(super) struct RunpodPods {
    /// Per lease owner (token and worker), the jobs handed to it or listed by its pings and
    /// not yet finished, and when it was last heard of: what its stop channel watches.
    held: HashMap<String, (BTreeSet<RunpodJobId>, Instant)>,
    /// The last partial output streamed for a job (a generator handler's last yield).
    streamed: HashMap<RunpodJobId, (Value, Instant)>,
}

/// Who a RunPod worker is: its token and `RUNPOD_POD_ID`, with the models it asks for.
#[derive(Debug, Clone)]
pub struct RunpodWorker {
    pub pod: String,
    /// Empty: every model of its token.
    pub models: Vec<String>,
    pub version: Option<String>,
}

impl RunpodWorker {
    fn hello(&self, slots: u32) -> Hello {
        Hello {
            id: self.pod.clone(),
            name: self.pod.clone(),
            version: Some(
                self.version
                    .as_ref()
                    .map_or_else(|| "runpod".to_owned(), |v| format!("runpod {v}")),
            ),
            models: self.models.clone(),
            slots,
            labels: BTreeMap::from([("protocol".to_owned(), "runpod".to_owned())]),
        }
    }

    fn checked(&self) -> Result<(), WorkerError> {
        if valid_worker_id(&self.pod) {
            Ok(())
        } else {
            Err(WorkerError::Invalid(
                "RUNPOD_POD_ID: must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
                    .into(),
            ))
        }
    }

    fn lease(&self, token: &WorkerToken, id: RunpodJobId) -> String {
        WorkerLease {
            owner: owner_for(token.id, &self.pod),
            attempt: id.attempt,
        }
        .to_string()
    }
}

/// What `progress_update(job, value)` sent, as progress and a log line: a number is a
/// percentage (a fraction when below 1 with a decimal point), a string a message, an object
/// `{step, total, message}` (or `percent`) the same fields; the log line says it in words.
pub fn progress_of(value: &Value) -> (Progress, LogLine) {
    let percent = |x: f64| Progress {
        step: x.clamp(0.0, 100.0).round() as u64,
        total: Some(100),
        message: None,
    };
    let progress = match value {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            percent(if (0.0..1.0).contains(&x) {
                x * 100.0
            } else {
                x
            })
        }
        Value::Number(n) => percent(n.as_f64().unwrap_or_default()),
        Value::String(s) => Progress {
            step: 0,
            total: None,
            message: Some(s.clone()),
        },
        Value::Object(m) if m.contains_key("step") || m.contains_key("percent") => {
            let message = m.get("message").and_then(Value::as_str).map(str::to_owned);
            match m.get("step").and_then(Value::as_u64) {
                Some(step) => Progress {
                    step,
                    total: m.get("total").and_then(Value::as_u64),
                    message,
                },
                None => Progress {
                    message,
                    ..percent(m.get("percent").and_then(Value::as_f64).unwrap_or_default())
                },
            }
        }
        other => Progress {
            step: 0,
            total: None,
            message: Some(other.to_string()),
        },
    };
    let words = match (&progress.message, progress.total) {
        (Some(m), _) if matches!(value, Value::String(_)) => m.clone(),
        (m, Some(total)) => {
            let at = format!("progress {} of {total}", progress.step);
            m.as_ref().map_or(at.clone(), |m| format!("{at}: {m}"))
        }
        (m, None) => format!(
            "progress {}{}",
            progress.step,
            m.as_ref().map(|m| format!(": {m}")).unwrap_or_default()
        ),
    };
    let line = LogLine {
        message: words,
        level: "INFO".to_owned(),
        timestamp: Utc::now(),
    };
    (progress, line)
}

/// The message of a handler's `error`: the SDK sends a caught exception as JSON text
/// (`error_type`, `error_message`, `error_traceback`); its traceback goes to the log.
pub fn error_of(error: &Value) -> (String, Vec<LogLine>) {
    let text = match error {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let parsed: Option<serde_json::Map<String, Value>> = serde_json::from_str(&text).ok();
    let Some(info) = parsed.filter(|m| m.contains_key("error_message")) else {
        return (text, Vec::new());
    };
    let field = |k: &str| info.get(k).and_then(Value::as_str).unwrap_or_default();
    let kind = field("error_type")
        .trim_start_matches("<class '")
        .trim_end_matches("'>");
    let message = if kind.is_empty() {
        field("error_message").to_owned()
    } else {
        format!("{kind}: {}", field("error_message"))
    };
    let logs = field("error_traceback")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| LogLine {
            message: l.to_owned(),
            level: "ERROR".to_owned(),
            timestamp: Utc::now(),
        })
        .collect();
    (message, logs)
}

impl WorkerService {
    fn pods(&self) -> std::sync::MutexGuard<'_, RunpodPods> {
        self.runpod
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes that the worker holds `id`; forgets the workers not heard of for an hour (gone
    /// without finishing their jobs, which their leases long gave back).
    fn remember(&self, token: &WorkerToken, worker: &RunpodWorker, id: RunpodJobId) {
        let now = Instant::now();
        let mut pods = self.pods();
        pods.held
            .retain(|_, (_, seen)| now.duration_since(*seen) < FORGET_AFTER);
        let (ids, seen) = pods
            .held
            .entry(owner_for(token.id, &worker.pod))
            .or_insert_with(|| (BTreeSet::new(), now));
        ids.insert(id);
        *seen = now;
    }

    fn forget_runpod(&self, token: &WorkerToken, worker: &RunpodWorker, id: RunpodJobId) {
        let mut pods = self.pods();
        let owner = owner_for(token.id, &worker.pod);
        if let Some((held, _)) = pods.held.get_mut(&owner) {
            held.remove(&id);
            if held.is_empty() {
                pods.held.remove(&owner);
            }
        }
        pods.streamed.remove(&id);
    }

    /// job-take and job-take-batch: up to `free` jobs, waiting up to `wait` for the first.
    pub async fn runpod_take(
        &self,
        token: &WorkerToken,
        worker: &RunpodWorker,
        free: u32,
        wait: Duration,
    ) -> Result<Vec<(RunpodJobId, Taken)>, WorkerError> {
        worker.checked()?;
        let taken = self.take(token, worker.hello(free), free, wait).await?;
        Ok(taken
            .into_iter()
            .map(|t| {
                let id = RunpodJobId {
                    job: t.job.id,
                    attempt: t.lease.attempt,
                };
                self.remember(token, worker, id);
                (id, t)
            })
            .collect())
    }

    /// The job a RunPod call names, while its attempt's lease is this worker's (409 after).
    pub async fn runpod_held(
        &self,
        token: &WorkerToken,
        worker: &RunpodWorker,
        id: &str,
    ) -> Result<(RunpodJobId, HeldRun), WorkerError> {
        worker.checked()?;
        let rid: RunpodJobId = id.parse()?;
        let run = self
            .held(token, &rid.job.to_string(), &worker.lease(token, rid))
            .await?;
        Ok((rid, run))
    }

    /// ping: renews the leases of the jobs it lists (the others lapse). Jobs whose lease is
    /// lost are left to the stop channel.
    pub async fn runpod_ping(
        &self,
        token: &WorkerToken,
        worker: &RunpodWorker,
        ids: &[String],
    ) -> Result<super::Beats, WorkerError> {
        worker.checked()?;
        let mut listed = Vec::with_capacity(ids.len());
        for id in ids {
            listed.push(id.parse::<RunpodJobId>()?);
        }
        let held = listed
            .iter()
            .map(|id| HeldBeat {
                id: id.job.to_string(),
                lease: worker.lease(token, *id),
                logs: Vec::new(),
                progress: None,
            })
            .collect();
        let slots = u32::try_from(listed.len()).unwrap_or(u32::MAX).max(1);
        let beats = self.heartbeat(token, worker.hello(slots), held).await?;
        for id in listed {
            self.remember(token, worker, id);
        }
        Ok(beats)
    }

    /// `progress_update`: progress and a log line for the job's readers; it renews the lease.
    pub async fn runpod_progress(
        &self,
        token: &WorkerToken,
        worker: &RunpodWorker,
        run: &HeldRun,
        value: &Value,
    ) -> Result<(), WorkerError> {
        let (progress, line) = progress_of(value);
        let id = RunpodJobId {
            job: run.job.id,
            attempt: run.lease.attempt,
        };
        let beat = HeldBeat {
            id: id.job.to_string(),
            lease: worker.lease(token, id),
            logs: vec![line],
            progress: Some(progress),
        };
        let beats = self.heartbeat(token, worker.hello(1), vec![beat]).await?;
        if beats.lost.contains(&id.job) {
            return Err(WorkerError::LeaseLost(id.job));
        }
        Ok(())
    }

    /// Remembers a generator's partial output (already in the model's shape, or not), the
    /// output of its job when the SDK's job-done brings none.
    pub fn runpod_streamed(&self, id: RunpodJobId, output: Value) {
        let mut pods = self.pods();
        let now = Instant::now();
        let stale = self.heartbeat_every() * 60;
        pods.streamed
            .retain(|_, (_, at)| now.duration_since(*at) < stale);
        pods.streamed.insert(id, (output, now));
    }

    /// The last partial output streamed for the job, taken.
    pub fn runpod_last_streamed(&self, id: RunpodJobId) -> Option<Value> {
        self.pods().streamed.remove(&id).map(|(v, _)| v)
    }

    /// The job's end is committed (or was refused for good): its worker no longer holds it.
    pub fn runpod_finished(&self, token: &WorkerToken, worker: &RunpodWorker, id: RunpodJobId) {
        self.forget_runpod(token, worker, id);
    }

    /// job-stop: the jobs this worker holds that it must stop, waiting up to `wait` for one. A
    /// job whose cancel was asked ends CANCELED here (the SDK only stops its task and reports
    /// nothing); a job whose lease the worker lost (taken over, ended) is to be stopped too.
    pub async fn runpod_stops(
        &self,
        token: &WorkerToken,
        worker: &RunpodWorker,
        wait: Duration,
    ) -> Result<Vec<RunpodJobId>, WorkerError> {
        worker.checked()?;
        let owner = owner_for(token.id, &worker.pod);
        let deadline = Instant::now() + wait;
        loop {
            let held: Vec<RunpodJobId> = self
                .pods()
                .held
                .get(&owner)
                .map(|(s, _)| s.iter().copied().collect())
                .unwrap_or_default();
            let mut stop = Vec::new();
            for id in held {
                let job = self.store.get_job(id.job, None).await?;
                let holds = job.as_ref().is_some_and(|j| {
                    j.status == JobStatus::InProgress
                        && j.lease
                            .as_ref()
                            .is_some_and(|l| l.owner == owner && l.attempt == id.attempt)
                });
                if !holds {
                    stop.push(id);
                    continue;
                }
                if job.is_some_and(|j| j.cancel_requested) {
                    let (_, run) = self.runpod_held(token, worker, &id.to_string()).await?;
                    match self
                        .fail(run, None, "cancelled".to_owned(), false, Vec::new())
                        .await
                    {
                        Ok(_) | Err(WorkerError::LeaseLost(_)) => stop.push(id),
                        Err(e) => return Err(e),
                    }
                }
            }
            for id in &stop {
                self.forget_runpod(token, worker, *id);
            }
            if !stop.is_empty() || Instant::now() >= deadline {
                return Ok(stop);
            }
            tokio::time::sleep(STOP_POLL.min(deadline.saturating_duration_since(Instant::now())))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_runpod_id_names_the_job_and_its_attempt() {
        let id = RunpodJobId {
            job: JobId::generate(),
            attempt: 3,
        };
        assert_eq!(id.to_string().parse::<RunpodJobId>().unwrap(), id);
        for bad in [
            "",
            "3",
            "x.3",
            &format!("{}.x", id.job),
            &id.job.to_string(),
        ] {
            assert!(bad.parse::<RunpodJobId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn progress_updates_become_progress_and_words() {
        let (p, l) = progress_of(&json!(0.25));
        assert_eq!((p.step, p.total), (25, Some(100)));
        assert_eq!(l.message, "progress 25 of 100");
        let (p, _) = progress_of(&json!(40));
        assert_eq!((p.step, p.total), (40, Some(100)));
        let (p, l) = progress_of(&json!("denoising"));
        assert_eq!(p.message.as_deref(), Some("denoising"));
        assert_eq!(l.message, "denoising");
        let (p, l) = progress_of(&json!({"step": 3, "total": 8, "message": "step 3"}));
        assert_eq!((p.step, p.total), (3, Some(8)));
        assert_eq!(l.message, "progress 3 of 8: step 3");
    }

    #[test]
    fn a_caught_exception_reads_as_its_type_and_message() {
        let sent = json!(
            json!({"error_type": "<class 'ValueError'>", "error_message": "bad prompt",
                   "error_traceback": "Traceback\n  line 1\nValueError: bad prompt"})
            .to_string()
        );
        let (message, logs) = error_of(&sent);
        assert_eq!(message, "ValueError: bad prompt");
        assert_eq!(logs.len(), 3);
        assert_eq!(error_of(&json!("plain")).0, "plain");
    }
}
