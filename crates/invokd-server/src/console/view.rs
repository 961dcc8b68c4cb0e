//! Jobs as the console's pages show them: times in words, outputs sorted into images, audio
//! and other files (their URLs the same signed ones the API gives), logs and deliveries.

use chrono::{DateTime, Utc};
use invokd_core::{Job, JobStatus, provider::LogLine, store::Delivery};
use serde_json::{Map, Value};

use crate::present::UrlRenderer;

pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map(time).unwrap_or_else(|| "-".into())
}

/// A duration in the unit that reads best: `850 ms`, `12.3 s`, `4 min 5 s`, `2 h 3 min`.
pub fn duration(d: chrono::Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// A size in bytes, in the unit that reads best.
pub fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// The class that colours a status.
pub fn status_class(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Queued => "queued",
        JobStatus::InProgress => "running",
        JobStatus::Completed => "completed",
        JobStatus::Failed => "failed",
        JobStatus::Canceled => "canceled",
    }
}

/// A file of a job's output.
#[derive(Debug, Clone)]
pub struct FileView {
    pub url: String,
    pub content_type: String,
    /// The format: what follows `image/` or `audio/`.
    pub format: String,
    pub size: String,
    pub width: Option<u64>,
    pub height: Option<u64>,
}

/// A job's output files, by kind.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pub images: Vec<FileView>,
    pub audio: Vec<FileView>,
    pub other: Vec<FileView>,
}

impl Outputs {
    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.audio.is_empty() && self.other.is_empty()
    }

    /// Every object of the output with a string `url` and `content_type` (fal's file shape),
    /// wherever it is.
    pub fn of(output: &Map<String, Value>) -> Self {
        let mut out = Self::default();
        // Pushed in reverse, so they are taken in the output's order.
        let mut stack: Vec<&Value> = output.values().rev().collect();
        while let Some(v) = stack.pop() {
            match v {
                Value::Array(items) => stack.extend(items.iter().rev()),
                Value::Object(o) => {
                    let url = o.get("url").and_then(Value::as_str);
                    let ct = o.get("content_type").and_then(Value::as_str);
                    if let (Some(url), Some(ct)) = (url, ct) {
                        let file = FileView {
                            url: url.to_owned(),
                            content_type: ct.to_owned(),
                            format: ct.split('/').nth(1).unwrap_or(ct).to_owned(),
                            size: o
                                .get("file_size")
                                .and_then(Value::as_u64)
                                .map(bytes)
                                .unwrap_or_default(),
                            width: o.get("width").and_then(Value::as_u64),
                            height: o.get("height").and_then(Value::as_u64),
                        };
                        if ct.starts_with("image/") {
                            out.images.push(file);
                        } else if ct.starts_with("audio/") {
                            out.audio.push(file);
                        } else {
                            out.other.push(file);
                        }
                    } else {
                        stack.extend(o.values().rev());
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// One line of a job's log.
#[derive(Debug, Clone)]
pub struct LogView {
    pub at: String,
    pub level: String,
    pub message: String,
}

impl From<&LogLine> for LogView {
    fn from(l: &LogLine) -> Self {
        Self {
            at: l.timestamp.format("%H:%M:%S%.3f").to_string(),
            level: l.level.clone(),
            message: l.message.clone(),
        }
    }
}

/// A webhook delivery and its attempts.
#[derive(Debug, Clone)]
pub struct DeliveryView {
    pub url: String,
    pub state: String,
    pub attempts: Vec<(String, String)>,
}

impl From<&Delivery> for DeliveryView {
    fn from(d: &Delivery) -> Self {
        Self {
            url: d.url.clone(),
            state: format!("{:?}", d.state).to_lowercase(),
            attempts: d
                .attempts
                .iter()
                .map(|a| {
                    let result = match (a.status_code, &a.error) {
                        (Some(code), _) => format!("HTTP {code}"),
                        (None, Some(e)) => e.clone(),
                        (None, None) => "no answer".into(),
                    };
                    (time(a.at), result)
                })
                .collect(),
        }
    }
}

/// A job as a row of a list or the head of its page.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub model: String,
    pub status: &'static str,
    pub class: &'static str,
    pub terminal: bool,
    pub created: String,
    pub started: String,
    pub completed: String,
    /// Run time, for jobs that started.
    pub took: String,
    pub attempt: String,
    pub tags: String,
    pub prompt: String,
    pub project: String,
}

impl JobRow {
    pub fn of(job: &Job) -> Self {
        let took = job
            .started_at
            .map(|s| duration(job.completed_at.unwrap_or_else(Utc::now) - s))
            .unwrap_or_default();
        Self {
            id: job.id.to_string(),
            model: job.model_id.clone(),
            status: job.status.as_str(),
            class: status_class(job.status),
            terminal: job.status.is_terminal(),
            created: time(job.created_at),
            started: opt_time(job.started_at),
            completed: opt_time(job.completed_at),
            took,
            attempt: format!("{}/{}", job.attempt, job.max_attempts),
            tags: job
                .tags
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
            prompt: prompt_of(job).chars().take(120).collect(),
            project: job.project.clone(),
        }
    }
}

/// The input's prompt (or the text of a speech model), if it has one.
pub fn prompt_of(job: &Job) -> &str {
    ["prompt", "text", "input"]
        .iter()
        .find_map(|k| job.input.get(*k).and_then(Value::as_str))
        .unwrap_or_default()
}

/// The job's output with its files as signed URLs.
pub fn outputs(job: &Job, urls: &UrlRenderer<'_>) -> (Outputs, Value) {
    match &job.output {
        Some(out) => {
            let rendered = urls.output(job.id, out);
            (Outputs::of(&rendered), Value::Object(rendered))
        }
        None => (Outputs::default(), Value::Null),
    }
}

/// JSON as people read it: indented.
pub fn pretty(v: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn files_are_found_wherever_the_output_puts_them() {
        let out = json!({
            "images": [
                {"url": "u1", "content_type": "image/png", "width": 4, "height": 3, "file_size": 2048},
                {"url": "u2", "content_type": "image/jpeg"}
            ],
            "audio": {"url": "a", "content_type": "audio/wav"},
            "seed": 1,
            "nested": {"x": [{"url": "f", "content_type": "application/zip"}]}
        });
        let o = Outputs::of(out.as_object().unwrap());
        let urls: Vec<&str> = o.images.iter().map(|f| f.url.as_str()).collect();
        assert_eq!(urls, ["u1", "u2"]);
        assert_eq!(o.images[0].size, "2.0 KiB");
        assert_eq!((o.images[0].width, o.images[0].height), (Some(4), Some(3)));
        assert_eq!(o.audio[0].format, "wav");
        assert_eq!(o.other[0].url, "f");
    }

    #[test]
    fn durations_read_in_their_unit() {
        assert_eq!(duration(chrono::Duration::milliseconds(850)), "850 ms");
        assert_eq!(duration(chrono::Duration::milliseconds(12_340)), "12.3 s");
        assert_eq!(duration(chrono::Duration::seconds(245)), "4 min 5 s");
        assert_eq!(duration(chrono::Duration::seconds(7380)), "2 h 3 min");
    }
}
