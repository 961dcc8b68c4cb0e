//! Progress while waiting for jobs: on a terminal a live line per job (status, queue position,
//! elapsed time since the job was created, latest log line); otherwise plain lines on stderr.
//! Ctrl-C stops waiting and asks whether to cancel the unfinished jobs or leave them running
//! (without a terminal it leaves them, and says how to resume).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use console::style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use invokd_api::async_invoke::{Invocation, Status};
use invokd_client::{Client, ClientError, WaitEvent, WaitOptions};

use super::{exit::Interrupted, output};

/// How long to watch a canceled running job stop before leaving it to the server.
const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// How to wait.
pub struct WaitSettings {
    pub timeout: Option<Duration>,
    pub interactive: bool,
}

/// Time since the job was created, frozen once it ended.
#[derive(Default)]
struct Age {
    since: Option<Instant>,
    total: Option<Duration>,
}

impl Age {
    fn text(&self) -> String {
        let d = match (self.total, self.since) {
            (Some(t), _) => t,
            (None, Some(s)) => s.elapsed(),
            (None, None) => return String::new(),
        };
        let secs = d.as_secs_f64();
        if secs < 60.0 {
            format!("{secs:.1}s")
        } else {
            format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
        }
    }
}

/// The first line of a log message, cut to what is left of the terminal's width after the
/// job's id, age and `status` (a wrapped live line would be drawn twice).
fn fit_log(log: &str, status: &str) -> String {
    // spinner, id (36), age (6), status, and the gaps between them
    let used = 2 + 36 + 2 + 6 + 2 + console::measure_text_width(status) + 2;
    let width = usize::from(console::Term::stderr().size().1);
    let first = log.lines().next().unwrap_or_default();
    console::truncate_str(first, width.saturating_sub(used + 1), "…").into_owned()
}

fn since_created(inv: &Invocation) -> Duration {
    (chrono::Utc::now() - inv.created_at)
        .to_std()
        .unwrap_or_default()
}

/// The last status seen of each job, shared with the Ctrl-C handling.
type Seen = Arc<Mutex<BTreeMap<String, Option<Status>>>>;

/// One job's line.
struct Line {
    id: String,
    bar: Option<ProgressBar>,
    age: Arc<Mutex<Age>>,
    status: Option<Status>,
    position: Option<u64>,
    log: Option<String>,
    seen: Seen,
}

impl Line {
    fn new(id: &str, live: Option<&MultiProgress>, seen: Seen) -> Self {
        let age = Arc::new(Mutex::new(Age::default()));
        let bar = live.map(|mp| {
            let a = age.clone();
            let style = ProgressStyle::with_template(
                "{spinner:.cyan} {prefix:.bold}  {age:>6}  {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key(
                "age",
                move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                    if let Ok(a) = a.lock() {
                        let _ = w.write_str(&a.text());
                    }
                },
            );
            let bar = mp.add(ProgressBar::new_spinner().with_style(style));
            bar.set_prefix(id.to_owned());
            bar.set_message("connecting");
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            id: id.to_owned(),
            bar,
            age,
            status: None,
            position: None,
            log: None,
            seen,
        }
    }

    fn status_text(&self) -> String {
        let mut s = self.status.map(Status::as_str).unwrap_or("").to_owned();
        if self.status == Some(Status::Queued)
            && let Some(p) = self.position
        {
            let _ = write!(s, " ({p} ahead)");
        }
        s
    }

    fn on_event(&mut self, ev: &WaitEvent) {
        let mut plain = None;
        match ev {
            WaitEvent::Status(inv) => {
                self.status = Some(inv.status);
                if let Ok(mut seen) = self.seen.lock() {
                    seen.insert(self.id.clone(), Some(inv.status));
                }
                if let Ok(mut a) = self.age.lock() {
                    let age = since_created(inv);
                    if a.since.is_none() {
                        a.since = Instant::now().checked_sub(age);
                    }
                    if inv.status.is_terminal() {
                        a.total = Some(
                            inv.completed_at
                                .and_then(|c| (c - inv.created_at).to_std().ok())
                                .unwrap_or(age),
                        );
                    }
                }
                if inv.status != Status::Queued {
                    self.position = None;
                }
                plain = Some(format!("{}  {}", self.status_text(), self.age_text()));
                if let Some(e) = &inv.error {
                    plain = plain.map(|p| format!("{p}  {e}"));
                }
            }
            WaitEvent::Log(l) => {
                self.log = Some(l.message.clone());
                plain = Some(format!("log: {}", l.message));
            }
            WaitEvent::QueuePosition(p) => {
                self.position = Some(*p);
                plain = Some(self.status_text());
            }
            _ => {}
        }
        match &self.bar {
            Some(bar) => {
                let mut msg = self.status_text();
                if let Some(l) = &self.log {
                    let _ = write!(msg, "  {}", style(fit_log(l, &msg)).dim().for_stderr());
                }
                bar.set_message(msg);
            }
            None => {
                if let Some(p) = plain {
                    output::stderr_line(&format!("{}  {}", self.id, p));
                }
            }
        }
    }

    fn age_text(&self) -> String {
        self.age.lock().map(|a| a.text()).unwrap_or_default()
    }

    /// Freezes an unfinished line as it is.
    fn stop(&self) {
        if let Some(bar) = &self.bar
            && !bar.is_finished()
        {
            bar.disable_steady_tick();
            bar.set_style(
                ProgressStyle::with_template("{msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let mut msg = format!(
                "  {}  {:>6}  {}",
                style(&self.id).bold().for_stderr(),
                self.age_text(),
                self.status_text()
            );
            if let Some(l) = &self.log {
                let _ = write!(msg, "  {}", style(fit_log(l, &msg)).dim().for_stderr());
            }
            bar.finish_with_message(msg);
        }
    }

    /// The line's last form, once the wait is over.
    fn finish(&self, result: &Result<Invocation, ClientError>) {
        let Some(bar) = &self.bar else {
            if let Err(e) = result {
                output::stderr_line(&format!("{}  {e}", self.id));
            }
            return;
        };
        let (mark, text) = match result {
            Ok(inv) => match inv.status {
                Status::Completed => (style("✔").green().for_stderr(), "COMPLETED".to_owned()),
                Status::Canceled => (style("✖").yellow().for_stderr(), "CANCELED".to_owned()),
                s => (
                    style("✖").red().for_stderr(),
                    match &inv.error {
                        Some(e) => format!("{s}  {e}"),
                        None => s.to_string(),
                    },
                ),
            },
            Err(e) => (style("!").red().for_stderr(), e.to_string()),
        };
        bar.set_style(
            ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.finish_with_message(format!(
            "{mark} {}  {:>6}  {text}",
            style(&self.id).bold().for_stderr(),
            self.age_text()
        ));
    }
}

/// Waits for every job at once, showing progress; the result of each, in order. Ctrl-C asks
/// what to do with the unfinished jobs and ends with [`Interrupted`].
pub async fn wait_all(
    client: &Client,
    ids: &[String],
    settings: &WaitSettings,
) -> anyhow::Result<Vec<Result<Invocation, ClientError>>> {
    let seen: Seen = Arc::new(Mutex::new(
        ids.iter().map(|id| (id.clone(), None)).collect(),
    ));
    let live = settings
        .interactive
        .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
    output::set_live(live.clone());
    let opts = WaitOptions {
        timeout: settings.timeout,
        queue_position: true,
        ..WaitOptions::default()
    };
    let mut lines: Vec<Line> = ids
        .iter()
        .map(|id| Line::new(id, live.as_ref(), seen.clone()))
        .collect();
    let waits = ids.iter().zip(lines.iter_mut()).map(|(id, line)| {
        let opts = &opts;
        async move {
            let r = client.wait_with(id, opts, |ev| line.on_event(ev)).await;
            line.finish(&r);
            r
        }
    });
    let all = futures::future::join_all(waits);
    let results = tokio::select! {
        r = all => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    // Unfinished lines stay, without their spinner.
    for line in &lines {
        line.stop();
    }
    output::set_live(None);
    drop(lines);
    drop(live);
    if let Some(r) = results {
        return Ok(r);
    }
    let unfinished: Vec<String> = seen
        .lock()
        .map(|s| {
            s.iter()
                .filter(|(_, st)| !st.is_some_and(Status::is_terminal))
                .map(|(id, _)| id.clone())
                .collect()
        })
        .unwrap_or_default();
    interrupted(client, ids, &unfinished, settings.interactive).await
}

async fn interrupted(
    client: &Client,
    ids: &[String],
    unfinished: &[String],
    interactive: bool,
) -> anyhow::Result<Vec<Result<Invocation, ClientError>>> {
    let ordered: Vec<String> = ids
        .iter()
        .filter(|id| unfinished.contains(id))
        .cloned()
        .collect();
    let jobs = if ordered.len() == 1 {
        "the job".to_owned()
    } else {
        format!("the {} unfinished jobs", ordered.len())
    };
    let cancel = if interactive && !ordered.is_empty() {
        let prompt = format!("Stopped waiting. Cancel {jobs} or leave running?");
        let items = [
            format!(
                "Leave {} running",
                if ordered.len() == 1 { "it" } else { "them" }
            ),
            format!("Cancel {jobs}"),
        ];
        let choice = tokio::task::spawn_blocking(move || {
            let term = console::Term::stderr();
            let c = dialoguer::Select::with_theme(&dialoguer::theme::ColorfulTheme::default())
                .with_prompt(prompt)
                .items(&items)
                .default(0)
                .interact_on_opt(&term);
            let _ = term.show_cursor();
            c
        })
        .await;
        matches!(choice, Ok(Ok(Some(1))))
    } else {
        false
    };
    if cancel {
        for id in &ordered {
            match client.cancel(id).await {
                Ok(inv) if inv.status == Status::Canceled => eprintln!("{id}: CANCELED"),
                // A running job is told to stop; it ends CANCELED once its run has stopped.
                Ok(_) => match client.wait(id, Some(CANCEL_GRACE)).await {
                    Ok(inv) => eprintln!("{id}: {}", inv.status),
                    Err(_) => eprintln!(
                        "{id}: cancel requested; it is still stopping (see `invokd async-invoke get {id}`)"
                    ),
                },
                Err(e) if e.api_id() == Some("conflict") => {
                    eprintln!("{id}: had already finished")
                }
                Err(e) => eprintln!("{id}: could not cancel it: {e}"),
            }
        }
    } else if !ordered.is_empty() {
        eprintln!(
            "Left {} running. Resume with:\n  invokd async-invoke wait {}",
            if ordered.len() == 1 {
                "the job".to_owned()
            } else {
                format!("{} jobs", ordered.len())
            },
            ordered.join(" ")
        );
    }
    Err(Interrupted.into())
}
