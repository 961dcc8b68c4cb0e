//! Output files: finding them in an invocation's output, naming them `<request_id>-<n>.<ext>`,
//! and saving them without ever overwriting a file unless asked to.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use invokd_api::async_invoke::Invocation;
use reqwest::Method;
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt as _;

use crate::{Client, ClientError, client::Call};

/// One file of an output: an object with a `url` (e.g. `output.images[0]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    /// A signed file URL, or a `data:` URI (`sync_mode`).
    pub url: String,
    pub content_type: Option<String>,
    pub file_name: Option<String>,
}

impl OutputFile {
    /// The file's extension: from the URL's path, else the content type, else `bin`.
    pub fn extension(&self) -> String {
        let from_path = if self.url.starts_with("data:") {
            None
        } else {
            reqwest::Url::parse(&self.url).ok().and_then(|u| {
                let last = u.path_segments()?.next_back()?.to_owned();
                let (_, ext) = last.rsplit_once('.')?;
                (!ext.is_empty()
                    && ext.len() <= 5
                    && ext.chars().all(|c| c.is_ascii_alphanumeric()))
                .then(|| ext.to_ascii_lowercase())
            })
        };
        let data_type = self
            .url
            .strip_prefix("data:")
            .and_then(|r| r.split([';', ',']).next())
            .map(str::to_owned);
        from_path
            .or_else(|| {
                self.content_type
                    .as_deref()
                    .or(data_type.as_deref())
                    .and_then(extension_of)
                    .map(str::to_owned)
            })
            .or_else(|| {
                let name = self.file_name.as_deref()?;
                let (_, ext) = name.rsplit_once('.')?;
                (!ext.is_empty() && ext.len() <= 5).then(|| ext.to_ascii_lowercase())
            })
            .unwrap_or_else(|| "bin".to_owned())
    }
}

fn extension_of(content_type: &str) -> Option<&'static str> {
    let t = content_type.split(';').next()?.trim().to_ascii_lowercase();
    Some(match t.as_str() {
        "image/jpeg" | "image/jpg" => "jpg",
        "image/png" => "png",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "image/svg+xml" => "svg",
        "audio/wav" | "audio/x-wav" | "audio/wave" => "wav",
        "audio/mpeg" | "audio/mp3" => "mp3",
        "audio/ogg" => "ogg",
        "audio/flac" => "flac",
        "video/mp4" => "mp4",
        "video/webm" => "webm",
        "application/json" => "json",
        "text/plain" => "txt",
        _ => return None,
    })
}

/// Every file of an output, in order: objects with a string `url`, depth first.
pub fn output_files(output: &Map<String, Value>) -> Vec<OutputFile> {
    fn walk(v: &Value, out: &mut Vec<OutputFile>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(u)) = m.get("url") {
                    let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
                    out.push(OutputFile {
                        url: u.clone(),
                        content_type: s("content_type"),
                        file_name: s("file_name"),
                    });
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    output.values().for_each(|v| walk(v, &mut out));
    out
}

/// `<request_id>-<n>.<ext>`, `n` counting from 0 in output order.
pub fn file_name(request_id: &str, n: usize, file: &OutputFile) -> String {
    let safe: String = request_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}-{n}.{}", file.extension())
}

/// Decodes a `data:` URI's bytes.
fn data_uri(url: &str) -> Option<Bytes> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    if meta.ends_with(";base64") {
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .ok()
            .map(Bytes::from)
    } else {
        Some(Bytes::from(data.as_bytes().to_vec()))
    }
}

impl Client {
    /// Fetches one file URL (signed: no key is sent) into memory.
    pub async fn download(&self, url: &str) -> Result<Bytes, ClientError> {
        if url.starts_with("data:") {
            return data_uri(url).ok_or_else(|| ClientError::InvalidUrl {
                url: url.chars().take(60).collect(),
                reason: "not a valid data URI".into(),
            });
        }
        let mut call = Call::new(Method::GET, url.to_owned());
        call.auth = false;
        let a = self.fetch(&call).await?;
        if !a.status.is_success() {
            return Err(crate::client::error_of(a.status, &a.bytes));
        }
        Ok(a.bytes)
    }

    /// Saves every output file of a finished job into `dir` (made if missing) as
    /// `<request_id>-<n>.<ext>`, and returns the paths in output order. Without `force`, nothing
    /// is written if any of the files already exists. Each file appears whole or not at all.
    pub async fn download_outputs(
        &self,
        inv: &Invocation,
        dir: &Path,
        force: bool,
    ) -> Result<Vec<PathBuf>, ClientError> {
        let files = inv.output.as_ref().map(output_files).unwrap_or_default();
        let targets: Vec<PathBuf> = files
            .iter()
            .enumerate()
            .map(|(n, f)| dir.join(file_name(&inv.request_id, n, f)))
            .collect();
        if !force && let Some(p) = targets.iter().find(|p| p.exists()) {
            return Err(ClientError::FileExists { path: p.clone() });
        }
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| ClientError::Io {
                path: dir.to_owned(),
                source,
            })?;
        for (file, target) in files.iter().zip(&targets) {
            self.save(file, target, force).await?;
        }
        Ok(targets)
    }

    /// Streams one file to `<target>.part`, then moves it into place.
    async fn save(&self, file: &OutputFile, target: &Path, force: bool) -> Result<(), ClientError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ClientError::Io { path, source }
        };
        let mut part = target.as_os_str().to_owned();
        part.push(".part");
        let part = PathBuf::from(part);
        let mut out = tokio::fs::File::create(&part).await.map_err(io(&part))?;
        let written = async {
            if file.url.starts_with("data:") {
                let bytes = self.download(&file.url).await?;
                out.write_all(&bytes).await.map_err(io(&part))?;
            } else {
                let mut call = Call::new(Method::GET, file.url.clone());
                call.auth = false;
                call.limited = false;
                let res = self.open(&call).await?;
                let mut body = res.bytes_stream();
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| ClientError::network(&file.url, e))?;
                    out.write_all(&chunk).await.map_err(io(&part))?;
                }
            }
            out.sync_all().await.map_err(io(&part))?;
            Ok::<_, ClientError>(())
        }
        .await;
        drop(out);
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
        let placed = if force {
            tokio::fs::rename(&part, target).await
        } else {
            // A hard link fails if the target exists, so a file made meanwhile is never replaced.
            match tokio::fs::hard_link(&part, target).await {
                Ok(()) => tokio::fs::remove_file(&part).await,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let _ = tokio::fs::remove_file(&part).await;
                    return Err(ClientError::FileExists {
                        path: target.to_owned(),
                    });
                }
                Err(_) => tokio::fs::rename(&part, target).await,
            }
        };
        placed.map_err(io(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn files_are_found_in_order_and_named_by_request_and_index() {
        let out = json!({
            "images": [
                {"url": "http://h/files/j/1/0.jpg?expires=1&sig=x", "content_type": "image/jpeg"},
                {"url": "http://h/files/j/1/1", "content_type": "image/png"},
                {"url": "data:audio/wav;base64,UklGRg==", "file_name": "a.wav"}
            ],
            "seed": 42
        });
        let files = output_files(out.as_object().unwrap());
        assert_eq!(files.len(), 3);
        let names: Vec<String> = files
            .iter()
            .enumerate()
            .map(|(n, f)| file_name("req-1", n, f))
            .collect();
        assert_eq!(names, ["req-1-0.jpg", "req-1-1.png", "req-1-2.wav"]);
        assert_eq!(data_uri(&files[2].url).unwrap().as_ref(), b"RIFF");
        let odd = OutputFile {
            url: "http://h/x".into(),
            content_type: None,
            file_name: None,
        };
        assert_eq!(odd.extension(), "bin");
        assert_eq!(file_name("a/b", 0, &odd), "a_b-0.bin");
    }
}
