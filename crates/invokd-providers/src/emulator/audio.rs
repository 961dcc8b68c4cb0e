//! Emulated audio: WAV music of exactly `seconds_total`, and WAV speech whose length follows the text.

use std::io::Cursor;

use invokd_core::{catalog::Model, provider::ProviderError};
use serde_json::{Map, Value};

use super::File;

const MUSIC_RATE: u32 = 44_100;
const SPEECH_RATE: u32 = 22_050;
/// Roughly how fast a voice reads, in characters per second at speed 1.
const CHARS_PER_SECOND: f64 = 15.0;

fn wav(rate: u32, samples: impl Iterator<Item = f32>) -> Result<Vec<u8>, ProviderError> {
    let fail = |e: hound::Error| {
        ProviderError::transient("internal_error", format!("WAV encoding failed: {e}"))
    };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut buf = Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut buf, spec).map_err(fail)?;
    for s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * f32::from(i16::MAX) * 0.6) as i16)
            .map_err(fail)?;
    }
    w.finalize().map_err(fail)?;
    Ok(buf.into_inner())
}

fn file(bytes: Vec<u8>, name: &str) -> File {
    File {
        name: name.to_owned(),
        bytes,
        content_type: "audio/wav",
        width: None,
        height: None,
    }
}

/// A beat and a bass line at a tempo and pitch picked by the seed, `seconds_total` long.
pub(super) fn render_music(
    model: &Model,
    input: &Map<String, Value>,
    seed: u64,
) -> Result<(Vec<File>, String), ProviderError> {
    let field = model
        .output
        .audio
        .as_ref()
        .map(|a| a.duration_field.as_str())
        .unwrap_or("seconds_total");
    let seconds = input
        .get(field)
        .and_then(Value::as_f64)
        .filter(|s| *s > 0.0)
        .ok_or_else(|| {
            ProviderError::permanent("bad_request", format!("{field} must be a positive number"))
        })?;
    let total = (seconds * f64::from(MUSIC_RATE)).round() as u64;
    let bpm = 110.0 + (seed % 30) as f32;
    let root = 55.0 * (1.0 + (seed >> 8) as f32 % 12.0 / 12.0);
    let beat = 60.0 / bpm;
    let samples = (0..total).map(move |i| {
        let t = i as f32 / MUSIC_RATE as f32;
        let in_beat = t % beat;
        let kick = (-in_beat * 30.0).exp() * (2.0 * std::f32::consts::PI * 50.0 * in_beat).sin();
        let step = ((t / beat) as u32 % 4) as f32;
        let bass = 0.4 * (2.0 * std::f32::consts::PI * root * (1.0 + step / 4.0) * t).sin();
        kick + bass
    });
    let bytes = wav(MUSIC_RATE, samples)?;
    Ok((
        vec![file(bytes, "output.wav")],
        format!("{seconds} s of WAV audio"),
    ))
}

/// How long the emulator's voice takes to read `text` at `speed`.
pub(super) fn speech_seconds(text: &str, speed: f64) -> f64 {
    (text.chars().count() as f64 / CHARS_PER_SECOND / speed.max(0.1)).max(0.5)
}

/// A tone per syllable-sized chunk of the text, as long as reading the text would take.
pub(super) fn render_speech(
    model: &Model,
    input: &Map<String, Value>,
    seed: u64,
) -> Result<(Vec<File>, String), ProviderError> {
    let spec = model.output.speech.as_ref();
    let text_field = spec.map(|s| s.text_field.as_str()).unwrap_or("text");
    let text = input
        .get(text_field)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ProviderError::permanent("bad_request", format!("{text_field} must be a string"))
        })?;
    let speed = spec
        .and_then(|s| s.speed_field.as_ref())
        .and_then(|f| input.get(f))
        .and_then(Value::as_f64)
        .unwrap_or(1.0);
    let seconds = speech_seconds(text, speed);
    let total = (seconds * f64::from(SPEECH_RATE)).round() as u64;
    let pitch = 110.0 + (seed % 90) as f32;
    let chars: Vec<u32> = text.chars().map(u32::from).collect();
    let per_char = total as f32 / chars.len().max(1) as f32;
    let samples = (0..total).map(move |i| {
        let t = i as f32 / SPEECH_RATE as f32;
        let c = chars
            .get((i as f32 / per_char) as usize)
            .copied()
            .unwrap_or(32);
        if c == 32 {
            return 0.0;
        }
        let f = pitch * (1.0 + (c % 7) as f32 / 10.0);
        (2.0 * std::f32::consts::PI * f * t).sin()
            * (0.6 + 0.4 * (2.0 * std::f32::consts::PI * 4.0 * t).sin())
    });
    let bytes = wav(SPEECH_RATE, samples)?;
    Ok((
        vec![file(bytes, "output.wav")],
        format!("{seconds:.2} s of WAV speech"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_length_follows_text_and_speed() {
        let short = speech_seconds("Hello there.", 1.0);
        let long = speech_seconds(&"Hello there. ".repeat(20), 1.0);
        assert!(long > short * 10.0);
        assert!(speech_seconds("Hello there.", 1.2) < short);
        assert!(speech_seconds("", 1.0) >= 0.5);
    }
}
