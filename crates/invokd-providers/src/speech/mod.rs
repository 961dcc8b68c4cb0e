//! The local speech provider (`local-speech`): speech models such as
//! `fal-ai/elevenlabs/tts/multilingual-v2` spoken by Debian's espeak-ng, run as a program (it
//! is GPL-3: run, never linked). Real, intelligible speech whose length follows the text, the
//! voice mapped to an espeak-ng voice (`voices.rs`) and the speed scaling the words per
//! minute, returned in the model's output shape. The gateway runs it in process, and
//! `invokd worker --backend speech` runs it on a worker.

mod voices;

use std::{
    io::Cursor,
    path::{Path, PathBuf},
    process::Stdio,
};

use async_trait::async_trait;
use bytes::Bytes;
use invokd_core::{
    catalog::Model,
    provider::{Provider, ProviderError, RunContext, RunOutput, RunRequest},
};
use serde_json::{Map, Value, json};
use tokio::{io::AsyncWriteExt, process::Command};

pub use voices::espeak_voice;

use crate::process::ProcessGroup;

/// The provider's name in routes (`--routes 'fal-ai/elevenlabs/*=local-speech'`).
pub const NAME: &str = "local-speech";
/// The program it runs, looked up on `PATH`.
pub const PROGRAM: &str = "espeak-ng";
/// espeak-ng's own rate, in words per minute: the rate of speed 1.
pub const BASE_WPM: f64 = 175.0;
/// The output file's name.
const FILE_NAME: &str = "output.wav";

/// Why the provider cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    #[error(
        "the local-speech provider runs {program}, which is not installed or cannot run ({source}); \
         install Debian's espeak-ng package (apt-get install espeak-ng) or route the model elsewhere"
    )]
    NotInstalled {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} --version failed: {stderr}")]
    Broken { program: String, stderr: String },
}

/// Speech through espeak-ng.
#[derive(Debug, Clone)]
pub struct LocalSpeech {
    program: PathBuf,
}

impl Default for LocalSpeech {
    fn default() -> Self {
        Self::new(PROGRAM)
    }
}

/// What one job asks espeak-ng for.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechPlan {
    pub text: String,
    /// The `-v` voice, e.g. `en-us+f1`.
    pub voice: String,
    /// The `-s` rate, in words per minute.
    pub wpm: u32,
}

impl SpeechPlan {
    /// Reads the text (the model's `speech.text_field`), `voice`, `language_code` and speed
    /// (`speech.speed_field`) of a prepared input.
    pub fn from_input(model: &Model, input: &Map<String, Value>) -> Result<Self, ProviderError> {
        let spec = model.output.speech.as_ref();
        let text_field = spec.map_or("text", |s| s.text_field.as_str());
        let text = input
            .get(text_field)
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                ProviderError::permanent(
                    "bad_request",
                    format!("{text_field} must be a non-empty string"),
                )
            })?;
        let speed = spec
            .and_then(|s| s.speed_field.as_deref())
            .and_then(|f| input.get(f))
            .and_then(Value::as_f64)
            .unwrap_or(1.0);
        let language = input.get("language_code").and_then(Value::as_str);
        if let Some(code) = language.filter(|c| !voices::is_language_code(c)) {
            return Err(ProviderError::permanent(
                "bad_request",
                format!("language_code {code:?} is not a language code"),
            ));
        }
        let voice = input.get("voice").and_then(Value::as_str).unwrap_or("");
        // espeak-ng takes 80 to 450 words per minute.
        let wpm = (BASE_WPM * speed).round().clamp(80.0, 450.0) as u32;
        Ok(Self {
            text: text.to_owned(),
            voice: espeak_voice(voice, language),
            wpm,
        })
    }

    /// espeak-ng's arguments, writing the WAV to `out`; the text goes on stdin.
    pub fn args(&self, out: &Path) -> Vec<std::ffi::OsString> {
        vec![
            "-v".into(),
            self.voice.clone().into(),
            "-s".into(),
            self.wpm.to_string().into(),
            "-w".into(),
            out.into(),
        ]
    }
}

impl LocalSpeech {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }

    /// Checks that the program runs, and returns its version line: a server or worker that
    /// would route jobs here refuses to start without it.
    pub fn check(&self) -> Result<String, SpeechError> {
        let program = self.program.display().to_string();
        let out = std::process::Command::new(&self.program)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| SpeechError::NotInstalled {
                program: program.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(SpeechError::Broken {
                program,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Speaks `plan` into WAV bytes; a cancel kills espeak-ng.
    pub async fn speak(
        &self,
        plan: &SpeechPlan,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Vec<u8>, ProviderError> {
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            ProviderError::transient("internal_error", format!("{what}: {e}"))
        };
        let dir = tempfile::tempdir().map_err(|e| internal("a temporary directory", &e))?;
        let out = dir.path().join(FILE_NAME);
        let mut cmd = Command::new(&self.program);
        cmd.args(plan.args(&out))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut group = ProcessGroup::spawn(cmd)
            .map_err(|e| internal(&format!("starting {}", self.program.display()), &e))?;
        let child = group.child();
        let mut stdin = child.stdin.take();
        let mut stderr = child.stderr.take();
        let text = plan.text.clone();
        let feed = async move {
            if let Some(stdin) = stdin.as_mut() {
                // A program that died early shows in its status and stderr.
                let _ = stdin.write_all(text.as_bytes()).await;
            }
            drop(stdin);
        };
        let errors = async move {
            let mut buf = Vec::new();
            if let Some(stderr) = stderr.as_mut() {
                let _ = tokio::io::AsyncReadExt::read_to_end(stderr, &mut buf).await;
            }
            String::from_utf8_lossy(&buf).trim().to_owned()
        };
        let (status, (), errors) = tokio::join!(group.wait(cancel), feed, errors);
        let status = status.map_err(|e| e.into_provider_error(PROGRAM))?;
        if !status.success() {
            return Err(ProviderError::permanent(
                "bad_request",
                format!(
                    "espeak-ng could not speak it (voice {}): {errors}",
                    plan.voice
                ),
            ));
        }
        tokio::fs::read(&out)
            .await
            .map_err(|e| internal("reading espeak-ng's output", &e))
    }
}

/// The samples of a 16-bit WAV file (espeak-ng's kind).
pub fn wav_samples(bytes: &[u8]) -> Option<Vec<i16>> {
    hound::WavReader::new(Cursor::new(bytes))
        .ok()?
        .samples::<i16>()
        .collect::<Result<_, _>>()
        .ok()
}

/// The length of a WAV file, in seconds.
pub fn wav_seconds(bytes: &[u8]) -> Option<f64> {
    let reader = hound::WavReader::new(Cursor::new(bytes)).ok()?;
    Some(f64::from(reader.duration()) / f64::from(reader.spec().sample_rate))
}

#[async_trait]
impl Provider for LocalSpeech {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn run(&self, req: RunRequest, ctx: RunContext) -> Result<RunOutput, ProviderError> {
        let plan = SpeechPlan::from_input(&req.model, &req.input)?;
        ctx.log(
            "INFO",
            format!(
                "local-speech: espeak-ng speaks it (voice {}, {} words per minute); \
                 not {}: stability, similarity and style are not honoured",
                plan.voice, plan.wpm, req.model.title
            ),
        )
        .await;
        let wav = self.speak(&plan, &ctx.cancel).await?;
        let seconds = wav_seconds(&wav).ok_or_else(|| {
            ProviderError::transient("internal_error", "espeak-ng wrote no readable WAV")
        })?;
        let size = wav.len();
        let url = ctx.put_file(FILE_NAME, Bytes::from(wav)).await?;
        ctx.log("INFO", format!("local-speech: {seconds:.2} s of speech"))
            .await;
        let audio = json!({
            "url": url,
            "content_type": "audio/wav",
            "file_name": FILE_NAME,
            "file_size": size,
        });
        let mut output = Map::new();
        for field in &req.model.output.fields {
            // espeak-ng reports no word timings: `timestamps` (and any other field) is null.
            let value = if field == "audio" {
                audio.clone()
            } else {
                Value::Null
            };
            output.insert(field.clone(), value);
        }
        Ok(RunOutput { output })
    }
}

#[cfg(test)]
mod tests;
