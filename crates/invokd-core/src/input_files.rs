//! Files named in inputs: every `*_url` or `*_urls` field, at any depth, holds an http(s) URL or
//! a `data:` URI (fal's rule). Data URIs are checked at submit; URLs are fetched at run time.

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::catalog::{PathItem, Violation, ViolationKind};

/// The largest file a data URI may carry.
pub const MAX_DATA_URI_BYTES: usize = 32 * 1024 * 1024;

/// One file reference in an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub path: Vec<PathItem>,
    pub value: String,
}

impl FileRef {
    pub fn dotted_path(&self) -> String {
        Violation {
            path: self.path.clone(),
            kind: ViolationKind::Other,
            message: String::new(),
        }
        .dotted_path()
    }
}

fn is_file_field(key: &str) -> bool {
    key.ends_with("_url") || key.ends_with("_urls")
}

/// Every file reference in `input`, in order.
pub fn file_refs(input: &Map<String, Value>) -> Vec<FileRef> {
    fn walk(v: &Value, path: &mut Vec<PathItem>, in_file_field: bool, out: &mut Vec<FileRef>) {
        match v {
            Value::String(s) if in_file_field => out.push(FileRef {
                path: path.clone(),
                value: s.clone(),
            }),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(PathItem::Index(i));
                    walk(item, path, in_file_field, out);
                    path.pop();
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    path.push(PathItem::Key(k.clone()));
                    walk(item, path, is_file_field(k), out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    let mut path = Vec::new();
    for (k, v) in input {
        path.push(PathItem::Key(k.clone()));
        walk(v, &mut path, is_file_field(k), &mut out);
        path.pop();
    }
    out
}

/// A decoded `data:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataUri {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// Decodes `data:[<type>][;base64],<data>`; `None` if `s` is not a data URI.
pub fn decode_data_uri(s: &str) -> Option<Result<DataUri, String>> {
    let rest = s.strip_prefix("data:")?;
    let Some((meta, data)) = rest.split_once(',') else {
        return Some(Err("a data URI needs a comma before its data".into()));
    };
    let mut parts = meta.split(';');
    let content_type = parts
        .next()
        .filter(|t| !t.is_empty())
        .unwrap_or("text/plain")
        .to_owned();
    let base64 = parts.any(|p| p.eq_ignore_ascii_case("base64"));
    if data.len() > MAX_DATA_URI_BYTES / 3 * 4 + 4 {
        return Some(Err(format!(
            "a data URI may carry at most {} MiB",
            MAX_DATA_URI_BYTES >> 20
        )));
    }
    let bytes = if base64 {
        match base64::engine::general_purpose::STANDARD.decode(data.trim()) {
            Ok(b) => b,
            Err(e) => return Some(Err(format!("the data URI is not valid base64: {e}"))),
        }
    } else {
        data.as_bytes().to_vec()
    };
    Some(Ok(DataUri {
        content_type,
        bytes,
    }))
}

/// What is wrong with the input's file references that can be known without fetching: a
/// malformed data URI, or a value that is neither an http(s) URL nor a data URI.
pub fn violations(input: &Map<String, Value>) -> Vec<Violation> {
    file_refs(input)
        .into_iter()
        .filter_map(|r| {
            let problem = match decode_data_uri(&r.value) {
                Some(Err(e)) => Some(e),
                Some(Ok(_)) => None,
                None if r.value.starts_with("https://") || r.value.starts_with("http://") => None,
                None => Some(format!(
                    "must be an http(s) URL or a data URI, got {:?}",
                    truncate(&r.value)
                )),
            };
            problem.map(|message| Violation {
                path: r.path,
                kind: ViolationKind::Other,
                message,
            })
        })
        .collect()
}

fn truncate(s: &str) -> String {
    if s.len() <= 40 {
        s.to_owned()
    } else {
        format!(
            "{}...",
            &s[..s.char_indices().nth(40).map(|(i, _)| i).unwrap_or(s.len())]
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn file_fields_are_found_at_any_depth() {
        let input = obj(json!({
            "prompt": "https://not-a-file-field.example",
            "image_url": "https://a.example/1.png",
            "input_image_urls": ["https://a.example/2.png", "data:image/png;base64,iVBO"],
            "controlnet": {"control_image_url": "https://a.example/3.png"},
        }));
        let paths: Vec<String> = file_refs(&input).iter().map(FileRef::dotted_path).collect();
        assert_eq!(
            paths,
            [
                "controlnet.control_image_url",
                "image_url",
                "input_image_urls[0]",
                "input_image_urls[1]"
            ]
        );
    }

    #[test]
    fn data_uris_decode_and_bad_ones_are_named() {
        let ok = decode_data_uri("data:image/png;base64,aGVsbG8=")
            .unwrap()
            .unwrap();
        assert_eq!(
            (ok.content_type.as_str(), ok.bytes.as_slice()),
            ("image/png", &b"hello"[..])
        );
        assert_eq!(decode_data_uri("data:,hi").unwrap().unwrap().bytes, b"hi");
        assert!(decode_data_uri("https://x").is_none());
        let v = violations(&obj(
            json!({"image_url": "data:image/png;base64,@@@", "mask_url": "ftp://x"}),
        ));
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].dotted_path(), "image_url");
        assert!(v[0].message.contains("base64"));
        assert!(v[1].message.contains("http(s) URL or a data URI"));
    }
}
