//! Re-hosting: every file URL in an output is downloaded into invokd's blob store and replaced
//! by its `blob:` reference, so results outlive fal's retention (an hour or less).

use invokd_core::provider::{ProviderError, RunContext};
use serde_json::{Map, Value};

use super::client::{FalClient, Resend};

/// Largest output file taken in; fal's outputs are images, audio and short videos.
const MAX_FILE_BYTES: usize = 1 << 30;

/// The http(s) `url` fields of file objects, with where they are, in document order.
fn file_urls(v: &Value, path: &mut Vec<PathStep>, found: &mut Vec<(Vec<PathStep>, String)>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(u)) = m.get("url")
                && (u.starts_with("https://") || u.starts_with("http://"))
            {
                found.push((path.clone(), u.clone()));
            }
            for (k, child) in m {
                path.push(PathStep::Key(k.clone()));
                file_urls(child, path, found);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                path.push(PathStep::Index(i));
                file_urls(child, path, found);
                path.pop();
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn object_at<'a>(
    root: &'a mut Map<String, Value>,
    path: &[PathStep],
) -> Option<&'a mut Map<String, Value>> {
    let Some((first, rest)) = path.split_first() else {
        return Some(root);
    };
    let PathStep::Key(k) = first else {
        return None;
    };
    let mut v = root.get_mut(k)?;
    for step in rest {
        v = match step {
            PathStep::Key(k) => v.get_mut(k)?,
            PathStep::Index(i) => v.get_mut(*i)?,
        };
    }
    v.as_object_mut()
}

/// A file extension for a downloaded file: from the URL's name, else its content type.
fn extension(url: &str, content_type: Option<&str>) -> String {
    let name = url
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default();
    if let Some((_, ext)) = name.rsplit_once('.')
        && !ext.is_empty()
        && ext.len() <= 5
        && ext.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return ext.to_ascii_lowercase();
    }
    let ext = match content_type.map(|c| c.split(';').next().unwrap_or_default().trim()) {
        Some("image/jpeg") => "jpg",
        Some("image/png") => "png",
        Some("image/webp") => "webp",
        Some("image/gif") => "gif",
        Some("audio/wav" | "audio/x-wav") => "wav",
        Some("audio/mpeg") => "mp3",
        Some("video/mp4") => "mp4",
        Some("application/json") => "json",
        _ => "bin",
    };
    ext.to_owned()
}

/// Downloads every file the output names and rewrites its `url` to the stored `blob:` reference.
/// The files are named `{names}{n}.{ext}`: one output's are told from another's of the same run
/// (a stream's events) by `names`.
pub async fn rehost(
    client: &FalClient,
    output: &mut Map<String, Value>,
    ctx: &RunContext,
    names: &str,
) -> Result<usize, ProviderError> {
    let mut found = Vec::new();
    for (k, v) in output.iter() {
        let mut path = vec![PathStep::Key(k.clone())];
        file_urls(v, &mut path, &mut found);
    }
    for (n, (path, url)) in found.iter().enumerate() {
        let answer = client
            .send(
                "output file download",
                || client.download(url),
                Resend::Always,
                &ctx.cancel,
            )
            .await
            .map_err(|e| {
                ProviderError::transient(
                    "upstream_file_unavailable",
                    format!("downloading the output file {url} failed: {e}"),
                )
            })?;
        if answer.body.len() > MAX_FILE_BYTES {
            return Err(ProviderError::permanent(
                "output_too_large",
                format!("the output file {url} is larger than {MAX_FILE_BYTES} bytes"),
            ));
        }
        let content_type = answer
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let obj = object_at(output, path).ok_or_else(|| {
            ProviderError::permanent("internal_error", "an output file moved while re-hosting")
        })?;
        let declared = obj
            .get("content_type")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let ext = extension(url, declared.as_deref().or(content_type.as_deref()));
        let blob = ctx
            .put_file(&format!("{names}{n}.{ext}"), answer.body)
            .await?;
        obj.insert("url".into(), Value::String(blob));
    }
    Ok(found.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_file_urls_at_any_depth() {
        let v = json!({
            "images": [{"url": "https://cdn/a.png"}, {"url": "data:image/png;base64,AA"}],
            "audio_file": {"url": "http://cdn/b"},
            "seed": 1, "prompt": "see https://x"
        });
        let mut found = Vec::new();
        file_urls(&v, &mut Vec::new(), &mut found);
        let urls: Vec<&str> = found.iter().map(|(_, u)| u.as_str()).collect();
        assert_eq!(urls, ["http://cdn/b", "https://cdn/a.png"]);
    }

    #[test]
    fn extensions_come_from_the_name_or_the_type() {
        assert_eq!(
            extension("https://v3.fal.media/files/x/y.JPEG?sig=1", None),
            "jpeg"
        );
        assert_eq!(
            extension("https://cdn/files/abc", Some("audio/mpeg")),
            "mp3"
        );
        assert_eq!(extension("https://cdn/files/abc", None), "bin");
    }
}
