//! What a RunPod handler returns, put in its model's output shape: every file it names (a
//! `data:` URI anywhere, an http(s) URL as a `url` field or as the whole output) is fetched
//! with the input fetcher's limits and outbound rules and stored as a file of the attempt, its
//! `blob:` reference in its place, with `content_type`, `file_name`, `file_size` and, for
//! images, `width` and `height` filled in where the handler left them out. An output that is
//! only files (a string or a list of them) becomes the model's file field: `images` of an image
//! model, `audio` of an audio or speech model.

use invokd_core::{
    catalog::Kind,
    workers::{HeldRun, WorkerService, image_dimensions},
};
use serde_json::{Map, Value, json};

use crate::input_fetch::InputFetcher;

/// Where a file string sits in the output.
struct Slot {
    /// A JSON pointer to the string.
    pointer: String,
    /// Whether it is the `url` field of an object (whose siblings describe it).
    in_object: bool,
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The file strings of `value`: data URIs anywhere, http(s) URLs as `url` fields or bare.
fn slots(value: &Value, pointer: &mut String, bare: bool, found: &mut Vec<Slot>) {
    match value {
        Value::String(s) if s.starts_with("data:") || (bare && is_url(s)) => found.push(Slot {
            pointer: pointer.clone(),
            in_object: false,
        }),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push_str(&format!("/{i}"));
                slots(v, pointer, bare && pointer.matches('/').count() == 1, found);
                pointer.truncate(len);
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&escape(k));
                match v {
                    Value::String(s) if k == "url" && (s.starts_with("data:") || is_url(s)) => {
                        found.push(Slot {
                            pointer: pointer.clone(),
                            in_object: true,
                        });
                    }
                    _ => slots(v, pointer, false, found),
                }
                pointer.truncate(len);
            }
        }
        _ => {}
    }
}

/// The file name extension of a content type.
fn extension(content_type: &str) -> &'static str {
    match content_type.split(';').next().unwrap_or_default().trim() {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "audio/wav" | "audio/x-wav" | "audio/wave" => "wav",
        "audio/mpeg" => "mp3",
        "audio/ogg" => "ogg",
        "audio/flac" => "flac",
        "video/mp4" => "mp4",
        "application/json" => "json",
        "text/plain" => "txt",
        _ => "bin",
    }
}

/// The description of a stored file, as the model's output names files.
fn described(
    url: String,
    name: &str,
    content_type: &str,
    bytes: &[u8],
    into: &mut Map<String, Value>,
) {
    into.insert("url".into(), Value::String(url));
    into.entry("content_type")
        .or_insert_with(|| json!(content_type));
    into.entry("file_name").or_insert_with(|| json!(name));
    into.insert("file_size".into(), json!(bytes.len()));
    if content_type.starts_with("image/")
        && let Some((w, h)) = image_dimensions(bytes)
    {
        into.entry("width").or_insert_with(|| json!(w));
        into.entry("height").or_insert_with(|| json!(h));
    }
}

/// `value` in the model's output shape, its files stored; or why it cannot be.
pub async fn shape(
    workers: &WorkerService,
    fetcher: &InputFetcher,
    run: &HeldRun,
    mut value: Value,
) -> Result<Map<String, Value>, String> {
    let mut found = Vec::new();
    slots(&value, &mut String::new(), true, &mut found);
    // How many files an output of files alone holds.
    let bare = match &value {
        Value::String(_) => Some(1),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => {
            Some(items.len())
        }
        _ => None,
    };
    let limit = workers.config().max_file_bytes;
    let mut files = Vec::new();
    for (n, slot) in found.iter().enumerate() {
        let source = value
            .pointer(&slot.pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let field = if slot.pointer.is_empty() {
            "output".to_owned()
        } else {
            format!("output{}", slot.pointer.replace('/', "."))
        };
        let (content_type, bytes) = fetcher
            .fetch(&source)
            .await
            .map_err(|e| format!("{field}: {e}"))?;
        if bytes.len() as u64 > limit {
            return Err(format!("{field}: a file may be at most {limit} bytes"));
        }
        let name = format!("output-{n}.{}", extension(&content_type));
        let stored = workers
            .store_file(run, &name, Some(&content_type), bytes.clone())
            .await
            .map_err(|e| format!("{field}: {e}"))?;
        let mut description = Map::new();
        described(
            stored.url.clone(),
            &name,
            &stored.content_type,
            &bytes,
            &mut description,
        );
        if slot.in_object {
            let parent = &slot.pointer[..slot.pointer.len() - "/url".len()];
            if let Some(Value::Object(m)) = value.pointer_mut(parent) {
                for (k, v) in description {
                    if k == "url" || k == "file_size" || !m.contains_key(&k) {
                        m.insert(k, v);
                    }
                }
            }
        } else if let Some(at) = value.pointer_mut(&slot.pointer) {
            if bare.is_some() {
                files.push(Value::Object(description));
            } else {
                *at = Value::String(stored.url);
            }
        }
    }
    if let Some(count) = bare {
        if files.len() != count {
            return Err(
                "output: a string output must be a file (a data: URI or an http(s) URL)".into(),
            );
        }
        return Ok(match run.model.kind {
            Kind::Image => Map::from_iter([("images".to_owned(), Value::Array(files))]),
            Kind::Audio | Kind::Speech => {
                let [audio] = <[Value; 1]>::try_from(files).map_err(|files| {
                    format!(
                        "output: an audio model's output is one file, not {}",
                        files.len()
                    )
                })?;
                Map::from_iter([("audio".to_owned(), audio)])
            }
        });
    }
    match value {
        Value::Object(m) => Ok(m),
        other => Err(format!(
            "output: must be an object of {}'s output fields ({}) or its files as data: URIs or \
             http(s) URLs, not {}",
            run.model.id,
            run.model.output.fields.join(", "),
            match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::Array(_) => "a list of other things than files",
                _ => "this",
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointers(v: &Value) -> Vec<(String, bool)> {
        let mut found = Vec::new();
        slots(v, &mut String::new(), true, &mut found);
        found
            .into_iter()
            .map(|s| (s.pointer, s.in_object))
            .collect()
    }

    #[test]
    fn files_are_found_where_outputs_name_them() {
        let v = json!({"images": [{"url": "data:image/png;base64,AA==", "width": 1},
                                   {"url": "https://x.test/a.png"}],
                       "prompt": "https://not.a.file/", "preview": "data:image/png;base64,AA=="});
        assert_eq!(
            pointers(&v),
            vec![
                ("/images/0/url".to_owned(), true),
                ("/images/1/url".to_owned(), true),
                ("/preview".to_owned(), false),
            ]
        );
        assert_eq!(
            pointers(&json!([
                "https://x.test/a.png",
                "data:audio/wav;base64,AA=="
            ])),
            vec![("/0".to_owned(), false), ("/1".to_owned(), false)]
        );
        assert_eq!(
            pointers(&json!("https://x.test/a.png")),
            vec![(String::new(), false)]
        );
        assert!(pointers(&json!({"a": {"b": "https://x.test/"}})).is_empty());
    }
}
