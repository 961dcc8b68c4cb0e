//! The emulator provider: deterministic, offline, honest synthetic outputs in the model's shape.

mod audio;
mod image;
mod preview;

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use invokd_core::{
    catalog::{Kind, Model},
    provider::{Provider, ProviderError, RunContext, RunOutput, RunRequest},
};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Put in every output, so no one mistakes an emulated result for the model's.
pub const NOTICE: &str = "synthetic output from the invokd emulator; no model ran";

/// How the emulator behaves.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// How long a job takes when its model has no entry in `latency_per_model`.
    pub latency: Duration,
    pub latency_per_model: HashMap<String, Duration>,
    /// Larger images are refused; the catalog refuses them at submit already.
    pub max_pixels_per_image: u64,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(500),
            latency_per_model: HashMap::new(),
            max_pixels_per_image: invokd_core::catalog::MAX_IMAGE_PIXELS,
        }
    }
}

/// The emulator provider.
#[derive(Debug, Clone, Default)]
pub struct Emulator {
    config: Arc<EmulatorConfig>,
}

impl Emulator {
    pub fn new(config: EmulatorConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    fn latency(&self, model: &str) -> Duration {
        self.config
            .latency_per_model
            .get(model)
            .copied()
            .unwrap_or(self.config.latency)
    }
}

/// One output file before it is stored.
struct File {
    name: String,
    bytes: Vec<u8>,
    content_type: &'static str,
    width: Option<u32>,
    height: Option<u32>,
}

/// A seed for the job: the input's `seed` when given, else one derived from the job id, so every
/// attempt of a job produces the same files.
fn job_seed(req: &RunRequest) -> u64 {
    if let Some(s) = req.input.get("seed").and_then(Value::as_u64) {
        return s;
    }
    let digest = Sha256::digest(req.job_id.to_string().as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    // Keep it within i64 so every JSON client reads it exactly.
    u64::from_le_bytes(b) >> 1
}

fn render(
    model: &Model,
    input: &Map<String, Value>,
    seed: u64,
    max_pixels: u64,
) -> Result<(Vec<File>, String), ProviderError> {
    match model.kind {
        Kind::Image => image::render(model, input, seed, max_pixels),
        Kind::Audio => audio::render_music(model, input, seed),
        Kind::Speech => audio::render_speech(model, input, seed),
    }
}

impl Emulator {
    /// Draws the job's files, off the async threads.
    async fn render(
        &self,
        req: &RunRequest,
        seed: u64,
        ctx: &RunContext,
    ) -> Result<Vec<File>, ProviderError> {
        let (model, input, max_pixels) = (
            req.model.clone(),
            req.input.clone(),
            self.config.max_pixels_per_image,
        );
        let (files, summary) =
            tokio::task::spawn_blocking(move || render(&model, &input, seed, max_pixels))
                .await
                .map_err(|e| {
                    ProviderError::transient("internal_error", format!("emulator task failed: {e}"))
                })??;
        ctx.log("INFO", format!("invokd emulator: produced {summary}"))
            .await;
        Ok(files)
    }
}

/// The previews of step `step` of a streaming model's images, off the async threads.
async fn previews(files: &[File], step: u32) -> Result<Vec<File>, ProviderError> {
    let finals: Vec<(Vec<u8>, Option<u32>, Option<u32>)> = files
        .iter()
        .map(|f| (f.bytes.clone(), f.width, f.height))
        .collect();
    tokio::task::spawn_blocking(move || {
        finals
            .into_iter()
            .enumerate()
            .map(|(i, (bytes, width, height))| {
                Ok(File {
                    name: format!("preview-{step}-{i}.jpeg"),
                    bytes: preview::preview(&bytes, step)?,
                    content_type: "image/jpeg",
                    width,
                    height,
                })
            })
            .collect()
    })
    .await
    .map_err(|e| ProviderError::transient("internal_error", format!("emulator task failed: {e}")))?
}

/// Stores the files and describes each as fal does (`url` a `blob:` reference).
async fn store(ctx: &RunContext, files: Vec<File>) -> Result<Vec<Value>, ProviderError> {
    let mut described = Vec::with_capacity(files.len());
    for f in files {
        let size = f.bytes.len();
        let url = ctx.put_file(&f.name, Bytes::from(f.bytes)).await?;
        let mut obj = json!({
            "url": url,
            "content_type": f.content_type,
            "file_name": f.name,
            "file_size": size,
        });
        if let (Some(w), Some(h)) = (f.width, f.height) {
            obj["width"] = json!(w);
            obj["height"] = json!(h);
        }
        described.push(obj);
    }
    Ok(described)
}

/// An output in the model's shape around the described files: the final one, or a preview's.
fn output_of(
    req: &RunRequest,
    described: Vec<Value>,
    seed: u64,
    elapsed: f64,
) -> Map<String, Value> {
    let mut output = Map::new();
    for field in &req.model.output.fields {
        let value = match field.as_str() {
            "images" => Value::Array(described.clone()),
            "audio" => described.first().cloned().unwrap_or(Value::Null),
            "seed" => json!(seed),
            "timings" => json!({"inference": elapsed}),
            "has_nsfw_concepts" => Value::Array(vec![Value::Bool(false); described.len()]),
            "prompt" => req.input.get("prompt").cloned().unwrap_or(Value::Null),
            _ => Value::Null,
        };
        output.insert(field.clone(), value);
    }
    output.insert("emulator".into(), json!(NOTICE));
    output
}

#[async_trait]
impl Provider for Emulator {
    fn name(&self) -> &'static str {
        "emulator"
    }

    async fn run(&self, req: RunRequest, ctx: RunContext) -> Result<RunOutput, ProviderError> {
        let started = std::time::Instant::now();
        let seed = job_seed(&req);
        ctx.log(
            "INFO",
            format!(
                "invokd emulator: {NOTICE}; model {} (attempt {})",
                req.model.id, req.attempt
            ),
        )
        .await;
        tracing::info!(job_id = %req.job_id, model = %req.model.id, "emulator running job (synthetic output)");

        if !req.files.is_empty() {
            let total: usize = req.files.iter().map(|f| f.bytes.len()).sum();
            ctx.log(
                "INFO",
                format!(
                    "invokd emulator: read {} input file(s), {total} bytes",
                    req.files.len()
                ),
            )
            .await;
        }
        // A streaming model's files are drawn first, so that its previews, made from them, can
        // be sent while the latency passes.
        let streaming = req.model.streaming && req.model.output.images.is_some();
        let mut files = None;
        if streaming {
            files = Some(self.render(&req, seed, &ctx).await?);
        }
        // The latency passes in a few steps, each logged, as a real model reports progress; a
        // streaming model sends a preview after each but the last.
        let latency = self.latency(&req.model.id);
        let steps: u32 = if streaming {
            preview::STEPS + 1
        } else if latency >= Duration::from_millis(100) {
            4
        } else {
            1
        };
        for step in 1..=steps {
            tokio::select! {
                () = tokio::time::sleep(latency / steps) => {}
                () = ctx.cancel.cancelled() => {
                    ctx.log("WARN", "invokd emulator: cancelled").await;
                    return Err(ProviderError::permanent("client_cancelled", "the job was cancelled"));
                }
            }
            if steps > 1 {
                ctx.log("INFO", format!("invokd emulator: step {step}/{steps}"))
                    .await;
            }
            if let Some(files) = files.as_ref().filter(|_| step <= preview::STEPS) {
                let previews = previews(files, step).await?;
                let described = store(&ctx, previews).await?;
                let elapsed = started.elapsed().as_secs_f64();
                ctx.partial(output_of(&req, described, seed, elapsed)).await;
            }
        }

        let files = match files {
            Some(files) => files,
            None => self.render(&req, seed, &ctx).await?,
        };
        let described = store(&ctx, files).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let output = output_of(&req, described, seed, elapsed);
        ctx.log(
            "INFO",
            format!("invokd emulator: done in {:.0} ms", elapsed * 1000.0),
        )
        .await;
        Ok(RunOutput { output })
    }
}
