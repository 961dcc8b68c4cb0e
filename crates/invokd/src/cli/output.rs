//! Printing: aligned text tables, JSON, invocations in both, and stderr lines that do not
//! tear the live progress display.

use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use invokd_api::async_invoke::Invocation;
use invokd_client::download::output_files;
use serde::Serialize;

/// The live display, while one is drawn: stderr lines go above it.
static LIVE: Mutex<Option<indicatif::MultiProgress>> = Mutex::new(None);

pub fn set_live(mp: Option<indicatif::MultiProgress>) {
    if let Ok(mut l) = LIVE.lock() {
        *l = mp;
    }
}

/// A line on stderr, above the live display if there is one.
pub fn stderr_line(msg: &str) {
    let live = LIVE.lock().ok().and_then(|l| l.clone());
    match live {
        Some(mp) => mp.suspend(|| eprintln!("{msg}")),
        None => eprintln!("{msg}"),
    }
}

/// A line (or lines) on stdout. A closed pipe (`invokd ... | head`) is not an error.
pub fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::from(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// Pretty JSON on stdout.
pub fn json(v: &impl Serialize) -> anyhow::Result<()> {
    out(&serde_json::to_string_pretty(v)?)
}

/// A table with aligned columns, as doctl prints them.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate().take(n) {
                if i + 1 == n {
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    s.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
                }
            }
            s.trim_end().to_owned()
        };
        let mut out = vec![line(&self.headers)];
        out.extend(self.rows.iter().map(|r| line(r)));
        out.join("\n")
    }

    pub fn print(&self) -> anyhow::Result<()> {
        out(&self.render())
    }
}

pub fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn opt_time(t: Option<&DateTime<Utc>>) -> String {
    t.map(time).unwrap_or_default()
}

fn tags(inv: &Invocation) -> String {
    inv.tags
        .iter()
        .map(|t| format!("{}={}", t.key, t.value))
        .collect::<Vec<_>>()
        .join(",")
}

/// Invocations as rows: the request id first, so `awk '{print $1}'` gets ids.
pub fn invocation_table(invs: &[Invocation]) -> Table {
    let mut t = Table::new(&["Request ID", "Model", "Status", "Created At", "Tags"]);
    for inv in invs {
        t.row(vec![
            inv.request_id.clone(),
            inv.model_id.clone(),
            inv.status.as_str().to_owned(),
            time(&inv.created_at),
            tags(inv),
        ]);
    }
    t
}

/// One invocation in full: its fields, then its error or output files.
pub fn invocation_detail(inv: &Invocation) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("Request ID", inv.request_id.clone()),
        ("Model", inv.model_id.clone()),
        ("Status", inv.status.as_str().to_owned()),
        ("Created At", time(&inv.created_at)),
        ("Started At", opt_time(inv.started_at.as_ref())),
        ("Completed At", opt_time(inv.completed_at.as_ref())),
    ];
    if !inv.tags.is_empty() {
        rows.push(("Tags", tags(inv)));
    }
    if let Some(w) = &inv.webhook {
        rows.push((
            "Webhook",
            format!("{} ({}, {} attempts)", w.url, w.state, w.attempts.len()),
        ));
    }
    if let Some(e) = &inv.error {
        rows.push(("Error", e.clone()));
    }
    if let Some(t) = &inv.expired_at {
        rows.push(("Expired At", time(t)));
    }
    let files = inv.output.as_ref().map(output_files).unwrap_or_default();
    for (i, f) in files.iter().enumerate() {
        let shown = if f.url.starts_with("data:") {
            format!(
                "{}... (data URI)",
                f.url.chars().take(40).collect::<String>()
            )
        } else {
            f.url.clone()
        };
        rows.push((if i == 0 { "Files" } else { "" }, shown));
    }
    if let Some(out) = &inv.output {
        for key in ["seed", "prompt"] {
            if let Some(v) = out.get(key).filter(|v| !v.is_null()) {
                let label = if key == "seed" { "Seed" } else { "Prompt" };
                rows.push((
                    label,
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                ));
            }
        }
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}   {v}").trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_trim() {
        let mut t = Table::new(&["A", "Long header", "C"]);
        t.row(vec!["xxxx".into(), "y".into(), "".into()]);
        t.row(vec!["z".into(), "".into(), "last".into()]);
        assert_eq!(
            t.render(),
            "A      Long header   C\nxxxx   y\nz                    last"
        );
    }
}
