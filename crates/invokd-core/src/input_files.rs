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

/// Every value of a file field in `input`, in order, with its path: the items of a list, each
/// value of an object inside a file field, else the value itself (a string, if it is valid).
fn file_values(input: &Map<String, Value>) -> Vec<(Vec<PathItem>, &Value)> {
    fn walk<'a>(
        v: &'a Value,
        path: &mut Vec<PathItem>,
        in_file_field: bool,
        out: &mut Vec<(Vec<PathItem>, &'a Value)>,
    ) {
        match v {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(PathItem::Index(i));
                    walk(item, path, in_file_field, out);
                    path.pop();
                }
            }
            Value::Object(map) if !in_file_field => {
                for (k, item) in map {
                    path.push(PathItem::Key(k.clone()));
                    walk(item, path, is_file_field(k), out);
                    path.pop();
                }
            }
            // An absent file; the schema says whether it may be.
            Value::Null => {}
            _ if in_file_field => out.push((path.clone(), v)),
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

/// Every file reference in `input`, in order.
pub fn file_refs(input: &Map<String, Value>) -> Vec<FileRef> {
    file_values(input)
        .into_iter()
        .filter_map(|(path, v)| {
            v.as_str().map(|s| FileRef {
                path,
                value: s.to_owned(),
            })
        })
        .collect()
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
    let content_type = parts.next().unwrap_or_default();
    if !content_type.is_empty() && !is_media_type(content_type) {
        return Some(Err(format!(
            "the data URI's media type {:?} is not type/subtype",
            truncate(content_type)
        )));
    }
    let content_type = if content_type.is_empty() {
        "text/plain".to_owned()
    } else {
        content_type.to_owned()
    };
    // `;name=value` parameters, then `;base64` last if at all (RFC 2397).
    let params: Vec<&str> = parts.collect();
    let base64 = params
        .last()
        .is_some_and(|p| p.eq_ignore_ascii_case("base64"));
    let plain = &params[..params.len() - usize::from(base64)];
    if let Some(p) = plain.iter().find(|p| !is_parameter(p)) {
        return Some(Err(format!(
            "the data URI's header has {:?} where a name=value parameter belongs",
            truncate(p)
        )));
    }
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

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
}

fn is_media_type(s: &str) -> bool {
    s.split_once('/')
        .is_some_and(|(t, sub)| is_token(t) && is_token(sub))
}

fn is_parameter(s: &str) -> bool {
    s.split_once('=')
        .is_some_and(|(name, value)| is_token(name) && !value.is_empty())
}

/// Why `value` is not an http(s) URL a download could use: it must parse, name a host (the
/// lenient parse of `http:///a.png` would make `a.png` the host) and a valid port.
fn url_problem(value: &str) -> Option<String> {
    let lower = value.get(..8).unwrap_or(value).to_ascii_lowercase();
    let Some(rest) = ["http://", "https://"]
        .iter()
        .find(|p| lower.starts_with(**p))
        .map(|p| &value[p.len()..])
    else {
        return Some(format!(
            "must be an http(s) URL or a data URI, got {:?}",
            truncate(value)
        ));
    };
    if rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .is_empty()
    {
        return Some(format!("the URL {:?} has no host", truncate(value)));
    }
    match url::Url::parse(value) {
        Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => None,
        Ok(_) => Some(format!("the URL {:?} has no host", truncate(value))),
        Err(e) => Some(format!("{:?} is not a valid URL: {e}", truncate(value))),
    }
}

/// What is wrong with the input's file references that can be known without fetching: a value
/// that is not a string, a malformed data URI, or a value that is neither a valid http(s) URL
/// nor a data URI.
pub fn violations(input: &Map<String, Value>) -> Vec<Violation> {
    file_values(input)
        .into_iter()
        .filter_map(|(path, v)| {
            let (kind, message) = match v {
                Value::String(s) => match decode_data_uri(s) {
                    Some(Err(e)) => (ViolationKind::Other, e),
                    Some(Ok(_)) => return None,
                    None => (ViolationKind::Other, url_problem(s)?),
                },
                other => (
                    ViolationKind::Type,
                    format!(
                        "must be a URL string (an http(s) URL or a data URI), got {}",
                        json_type(other)
                    ),
                ),
            };
            Some(Violation {
                path,
                kind,
                message,
            })
        })
        .collect()
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
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

    #[test]
    fn file_fields_must_hold_valid_url_strings() {
        for (value, says) in [
            (json!("http://"), "no host"),
            (json!("http:///a.png"), "no host"),
            (json!("http://[::1"), "not a valid URL"),
            (json!("http://a b.example/x.png"), "not a valid URL"),
            (json!("http://example.com:99999/a.png"), "not a valid URL"),
            (json!("data:;;;;base64,AAAA"), "name=value"),
            (json!("data:image;base64,AAAA"), "type/subtype"),
            (json!(5), "got a number"),
            (json!({"url": "https://a.example/x.png"}), "got an object"),
            (json!([5]), "got a number"),
            (json!(true), "got a boolean"),
        ] {
            let v = violations(&obj(json!({ "image_url": value.clone() })));
            assert_eq!(v.len(), 1, "{value}");
            assert!(v[0].message.contains(says), "{value}: {}", v[0].message);
        }
        for good in [
            json!("https://a.example/x.png?sig=1#f"),
            json!("HTTP://A.example:8080/x"),
            json!("data:image/png;name=a.png;base64,aGk="),
            json!("data:,hi"),
            json!(null),
            json!(["https://a.example/x.png"]),
        ] {
            assert!(
                violations(&obj(json!({ "image_urls": good.clone() }))).is_empty(),
                "{good}"
            );
        }
    }
}
