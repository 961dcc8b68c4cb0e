//! A worker's result checked against its model's output section before the job ends: the
//! files it names are this attempt's stored files, of the kind and size it says. A result that
//! fails is refused, so a job never ends with an output its readers cannot use.

use serde_json::{Map, Value};

use crate::{
    blob::{BLOB_SCHEME, BlobStore},
    catalog::{CountSpec, Kind, Model},
    ids::JobId,
};

/// What is wrong with a result, said so that the worker's author can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("output{0}")]
pub struct OutputProblem(String);

fn problem(path: &str, what: impl std::fmt::Display) -> OutputProblem {
    OutputProblem(format!("{path}: {what}"))
}

/// The blob keys a result of attempt `attempt` of `job` may name.
fn own_prefix(job: JobId, attempt: u32) -> String {
    format!("{BLOB_SCHEME}{job}/{attempt}/")
}

/// Every `blob:` reference in `value` must name a file of this attempt: a worker may not hand
/// its readers another job's files.
pub fn check_references(
    value: &Value,
    job: JobId,
    attempt: u32,
    path: &mut String,
) -> Result<(), OutputProblem> {
    match value {
        Value::String(s) if s.starts_with(BLOB_SCHEME) => {
            let prefix = own_prefix(job, attempt);
            if !s.starts_with(&prefix) || s[prefix.len()..].contains('/') {
                return Err(problem(
                    path,
                    format!(
                        "{s:?} is not a file stored for this attempt (files are stored with PUT .../files/NAME)"
                    ),
                ));
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check_references(v, job, attempt, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(m) => {
            for (k, v) in m {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                check_references(v, job, attempt, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Checks a final result of attempt `attempt` of `job` of `model`, whose prepared input was
/// `input`; reads each file it names back from `blobs`.
pub async fn check_output(
    model: &Model,
    input: &Map<String, Value>,
    job: JobId,
    attempt: u32,
    output: &Map<String, Value>,
    blobs: &dyn BlobStore,
) -> Result<(), OutputProblem> {
    if let Some(unknown) = output
        .keys()
        .find(|k| !model.output.fields.iter().any(|f| f == *k))
    {
        return Err(problem(
            &format!(".{unknown}"),
            format!(
                "is not a field of {}'s output (its fields: {})",
                model.id,
                model.output.fields.join(", ")
            ),
        ));
    }
    check_references(
        &Value::Object(output.clone()),
        job,
        attempt,
        &mut String::new(),
    )?;
    match model.kind {
        Kind::Image => check_images(model, input, output, blobs).await,
        Kind::Audio | Kind::Speech => {
            let audio = output.get("audio").ok_or_else(|| {
                problem(
                    ".audio",
                    "is missing: an audio model's output names its file",
                )
            })?;
            check_file(".audio", audio, "audio/", blobs)
                .await
                .map(|_| ())
        }
    }
}

async fn check_images(
    model: &Model,
    input: &Map<String, Value>,
    output: &Map<String, Value>,
    blobs: &dyn BlobStore,
) -> Result<(), OutputProblem> {
    let images = output
        .get("images")
        .and_then(Value::as_array)
        .ok_or_else(|| problem(".images", "must be an array of the stored images"))?;
    let expected = model
        .output
        .images
        .as_ref()
        .and_then(|spec| match &spec.count {
            CountSpec::Fixed(n) => Some(u64::from(*n)),
            CountSpec::Field(f) => input.get(f).and_then(Value::as_u64),
        });
    match expected {
        Some(n) if images.len() as u64 != n => {
            return Err(problem(
                ".images",
                format!(
                    "holds {} images where the input asked for {n}",
                    images.len()
                ),
            ));
        }
        _ if images.is_empty() => return Err(problem(".images", "holds no image")),
        _ => {}
    }
    for (i, image) in images.iter().enumerate() {
        let path = format!(".images[{i}]");
        let bytes = check_file(&path, image, "image/", blobs).await?;
        let (w, h) = image_dimensions(&bytes).ok_or_else(|| {
            problem(
                &path,
                "its file is not an image invokd can read (JPEG, PNG or WebP)",
            )
        })?;
        for (field, actual) in [("width", w), ("height", h)] {
            let said = image.get(field).and_then(Value::as_u64);
            if said != Some(u64::from(actual)) {
                return Err(problem(
                    &format!("{path}.{field}"),
                    format!(
                        "must be the image's {field}, {actual} (got {})",
                        image.get(field).map_or("nothing".into(), Value::to_string)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The width and height of an image invokd can read (JPEG, PNG or WebP).
pub fn image_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_dimensions().ok())
}

/// A file object (`{url, content_type, ...}`): its `url` a stored file of this attempt, its
/// `content_type` of the kind given, its `file_size` (if given) its size. The file's bytes.
async fn check_file(
    path: &str,
    file: &Value,
    kind: &str,
    blobs: &dyn BlobStore,
) -> Result<bytes::Bytes, OutputProblem> {
    let url = file
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| problem(path, "must be an object with the stored file's url"))?;
    let key = url.strip_prefix(BLOB_SCHEME).ok_or_else(|| {
        problem(
            &format!("{path}.url"),
            "must be the blob: reference the file's upload answered",
        )
    })?;
    let content_type = file
        .get("content_type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !content_type.starts_with(kind) {
        return Err(problem(
            &format!("{path}.content_type"),
            format!("must be {kind}*, got {content_type:?}"),
        ));
    }
    let bytes = blobs
        .get(key)
        .await
        .map_err(|e| problem(&format!("{path}.url"), format!("cannot be read: {e}")))?
        .ok_or_else(|| problem(&format!("{path}.url"), format!("{url:?} was never stored")))?;
    if let Some(size) = file.get("file_size")
        && size.as_u64() != Some(bytes.len() as u64)
    {
        return Err(problem(
            &format!("{path}.file_size"),
            format!(
                "must be the file's size, {} bytes (got {size})",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}
