//! The command provider: runs a local program per job, chosen by the job's model from a config
//! file. The program gets the input as JSON on stdin (and, by a template, in its arguments),
//! and a directory for its output files; it prints the result as a JSON object on stdout, and
//! every line of its stderr becomes one of the job's log lines. A non-zero exit fails the job
//! with its last stderr line; a cancel kills its process group. Files it wrote are stored and
//! named in the result by `blob:` references. `invokd worker --backend command` runs it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
};

use async_trait::async_trait;
use bytes::Bytes;
use invokd_core::{
    blob::content_type_for,
    catalog::pattern_specificity,
    provider::{Provider, ProviderError, RunContext, RunOutput, RunRequest},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::Command,
};

use crate::process::ProcessGroup;

/// The provider's name.
pub const NAME: &str = "command";

/// The largest result a program may print, in bytes.
const MAX_STDOUT: u64 = 16 * 1024 * 1024;

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// The config file: which command runs each model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    pub models: Vec<ModelCommand>,
}

/// One model pattern and its command.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCommand {
    /// A model id, or a prefix ending in `*`; the most specific pattern wins.
    pub pattern: String,
    /// The program and its arguments. In each, `{output_dir}` is the job's output directory,
    /// `{input}` the whole input as JSON, `{input.FIELD}` one field (a string as it is, anything
    /// else as JSON), `{model}` and `{job_id}` what they say.
    pub command: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The working directory (default: the worker's).
    #[serde(default)]
    pub workdir: Option<PathBuf>,
}

impl CommandConfig {
    /// Reads a TOML file, or JSON when its name ends in `.json`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let invalid = |reason: String| ConfigError::Invalid {
            path: shown.clone(),
            reason,
        };
        let config: Self = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?
        } else {
            toml::from_str(&text).map_err(|e| invalid(e.to_string()))?
        };
        if config.models.is_empty() {
            return Err(invalid("it names no models".into()));
        }
        for m in &config.models {
            if m.command.first().is_none_or(|p| p.is_empty()) {
                return Err(invalid(format!(
                    "model {:?} has an empty command",
                    m.pattern
                )));
            }
            if m.pattern.trim_end_matches('*').contains('*') {
                return Err(invalid(format!(
                    "pattern {:?}: `*` may only end a pattern",
                    m.pattern
                )));
            }
        }
        Ok(config)
    }

    /// The command of `model`, if a pattern matches it.
    pub fn for_model(&self, model: &str) -> Option<&ModelCommand> {
        self.models
            .iter()
            .filter_map(|m| pattern_specificity(&m.pattern, model).map(|s| (s, m)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, m)| m)
    }

    /// The patterns it serves.
    pub fn patterns(&self) -> Vec<String> {
        self.models.iter().map(|m| m.pattern.clone()).collect()
    }
}

/// Runs jobs as local programs.
#[derive(Debug, Clone)]
pub struct CommandProvider {
    config: CommandConfig,
}

impl CommandProvider {
    pub fn new(config: CommandConfig) -> Self {
        Self { config }
    }
}

/// `arg` with its placeholders filled in.
fn expand(arg: &str, req: &RunRequest, output_dir: &Path) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = &after[..close];
        let value = match name {
            "output_dir" => Some(output_dir.display().to_string()),
            "input" => Some(Value::Object((*req.input).clone()).to_string()),
            "model" => Some(req.model.id.clone()),
            "job_id" => Some(req.job_id.to_string()),
            _ => name
                .strip_prefix("input.")
                .map(|field| match req.input.get(field) {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => String::new(),
                }),
        };
        match value {
            Some(v) => out.push_str(&v),
            // Not a placeholder: kept as written.
            None => out.push_str(&rest[open..open + close + 2]),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

#[async_trait]
impl Provider for CommandProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn run(&self, req: RunRequest, ctx: RunContext) -> Result<RunOutput, ProviderError> {
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            ProviderError::transient("internal_error", format!("{what}: {e}"))
        };
        let spec = self.config.for_model(&req.model.id).ok_or_else(|| {
            ProviderError::permanent(
                "internal_error",
                format!("no command is configured for {}", req.model.id),
            )
        })?;
        let dir = tempfile::tempdir().map_err(|e| internal("a temporary directory", &e))?;
        let output_dir = dir.path().join("output");
        std::fs::create_dir(&output_dir).map_err(|e| internal("the output directory", &e))?;
        let argv: Vec<String> = spec
            .command
            .iter()
            .map(|a| expand(a, &req, &output_dir))
            .collect();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(&spec.env)
            .env("INVOKD_OUTPUT_DIR", &output_dir)
            .env("INVOKD_JOB_ID", req.job_id.to_string())
            .env("INVOKD_MODEL", &req.model.id)
            .env("INVOKD_ATTEMPT", req.attempt.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &spec.workdir {
            cmd.current_dir(dir);
        }
        let mut group = ProcessGroup::spawn(cmd).map_err(|e| {
            ProviderError::permanent("internal_error", format!("cannot start {}: {e}", argv[0]))
        })?;
        let child = group.child();
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let input = Value::Object((*req.input).clone()).to_string();
        let feed = async move {
            if let Some(mut stdin) = stdin {
                // A program that does not read its stdin closes it early: not an error.
                let _ = stdin.write_all(input.as_bytes()).await;
            }
        };
        let result = async move {
            let mut buf = Vec::new();
            if let Some(stdout) = stdout {
                let _ = stdout.take(MAX_STDOUT + 1).read_to_end(&mut buf).await;
            }
            buf
        };
        let log_ctx = ctx.clone();
        let logs = async move {
            let mut last = String::new();
            if let Some(stderr) = stderr {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if !line.trim().is_empty() {
                        last.clone_from(&line);
                    }
                    log_ctx.log("STDERR", line).await;
                }
            }
            last
        };
        let (status, (), stdout, last_err) =
            tokio::join!(group.wait(&ctx.cancel), feed, result, logs);
        let status = status.map_err(|e| e.into_provider_error(&argv[0]))?;
        if !status.success() {
            let how = status
                .code()
                .map_or_else(|| "was killed".to_owned(), |c| format!("exited with {c}"));
            let why = if last_err.is_empty() {
                String::new()
            } else {
                format!(": {last_err}")
            };
            return Err(ProviderError::permanent(
                "runtime_error",
                format!("{} {how}{why}", argv[0]),
            ));
        }
        if stdout.len() as u64 > MAX_STDOUT {
            return Err(ProviderError::permanent(
                "runtime_error",
                format!("{} printed more than {MAX_STDOUT} bytes", argv[0]),
            ));
        }
        let mut output = match serde_json::from_slice::<Value>(&stdout) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(ProviderError::permanent(
                    "runtime_error",
                    format!("{} printed no JSON object on stdout", argv[0]),
                ));
            }
        };
        let files = store_files(&output_dir, &ctx).await?;
        for (_, value) in output.iter_mut() {
            name_files(value, &files, &output_dir);
        }
        Ok(RunOutput { output })
    }
}

/// A file the program wrote, once stored.
struct Stored {
    name: String,
    url: String,
    size: usize,
}

/// Stores every file in `dir` (not its subdirectories), in name order.
async fn store_files(dir: &Path, ctx: &RunContext) -> Result<Vec<Stored>, ProviderError> {
    let read_failed = |e: std::io::Error| {
        ProviderError::transient("internal_error", format!("reading the output files: {e}"))
    };
    let mut names = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await.map_err(read_failed)?;
    while let Some(entry) = entries.next_entry().await.map_err(read_failed)? {
        if entry.file_type().await.map_err(read_failed)?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    let mut stored = Vec::with_capacity(names.len());
    for name in names {
        let bytes = tokio::fs::read(dir.join(&name))
            .await
            .map_err(read_failed)?;
        let size = bytes.len();
        let url = ctx.put_file(&name, Bytes::from(bytes)).await.map_err(|e| {
            ProviderError::permanent("runtime_error", format!("output file {name:?}: {e}"))
        })?;
        stored.push(Stored { name, url, size });
    }
    Ok(stored)
}

/// Replaces each string that names a stored file (by its name, or its path in `dir`) with the
/// file's `blob:` reference; an object whose `url` names one gets its `content_type`,
/// `file_name` and `file_size` where the program left them out.
fn name_files(value: &mut Value, files: &[Stored], dir: &Path) {
    let find = |s: &str| {
        let name = Path::new(s)
            .strip_prefix(dir)
            .map_or(s.to_owned(), |p| p.display().to_string());
        files.iter().find(|f| f.name == name)
    };
    match value {
        Value::String(s) => {
            if let Some(f) = find(s) {
                *s = f.url.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| name_files(v, files, dir)),
        Value::Object(map) => {
            let named = map.get("url").and_then(Value::as_str).and_then(find);
            map.values_mut().for_each(|v| name_files(v, files, dir));
            // After the walk, so that `file_name` keeps the name.
            if let Some(f) = named {
                for (k, v) in [
                    ("content_type", json!(content_type_for(&f.name))),
                    ("file_name", json!(f.name)),
                    ("file_size", json!(f.size)),
                ] {
                    map.entry(k).or_insert(v);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
