//! The speech provider against the real espeak-ng.

use std::time::Duration;

use invokd_core::provider::Provider;
use serde_json::json;

use super::*;
use crate::testing::{model, run_of};

const MODEL: &str = "fal-ai/elevenlabs/tts/multilingual-v2";

fn samples(wav: &[u8]) -> Vec<i16> {
    wav_samples(wav).unwrap()
}

async fn speak(input: serde_json::Value) -> (Map<String, Value>, Vec<u8>) {
    let (req, ctx, sink, _cancel) = run_of(model(MODEL), input);
    let out = LocalSpeech::default().run(req, ctx).await.unwrap();
    let wav = sink.file("/output.wav").unwrap().to_vec();
    (out.output, wav)
}

/// espeak-ng run by hand, as a user would, with the text on stdin.
fn espeak_directly(text: &str, voice: &str, wpm: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("direct.wav");
    let mut child = std::process::Command::new(PROGRAM)
        .args(["-v", voice, "-s", &wpm.to_string(), "-w"])
        .arg(&out)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    std::fs::read(out).unwrap()
}

#[tokio::test]
async fn the_wav_is_espeak_ngs_own_speech_of_the_text() {
    let text = "The quick brown fox jumps over the lazy dog.";
    let (output, wav) = speak(json!({"text": text, "voice": "Rachel", "speed": 1.0})).await;
    // The same samples as espeak-ng itself makes of the text, with the mapped voice.
    let direct = espeak_directly(text, "en-us+f1", 175);
    assert_eq!(samples(&wav), samples(&direct));
    // In the model's shape, the file stored through the run's context.
    let audio = &output["audio"];
    assert!(audio["url"].as_str().unwrap().starts_with("blob:"));
    assert!(audio["url"].as_str().unwrap().ends_with("/1/output.wav"));
    assert_eq!(audio["content_type"], "audio/wav");
    assert_eq!(audio["file_name"], "output.wav");
    assert_eq!(audio["file_size"], wav.len());
    assert!(output.contains_key("timestamps"));
    // Not silence: a speech-like loudness.
    let s = samples(&wav);
    let rms = (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt();
    assert!(rms > 500.0, "rms {rms}");
}

#[tokio::test]
async fn the_length_follows_the_text_and_the_speed() {
    let short = "Hello there.";
    let long = "Hello there. ".repeat(8);
    let (_, a) = speak(json!({"text": short})).await;
    let (_, b) = speak(json!({"text": long})).await;
    let (_, slow) = speak(json!({"text": long, "speed": 0.7})).await;
    let (_, fast) = speak(json!({"text": long, "speed": 1.2})).await;
    let (a, b) = (wav_seconds(&a).unwrap(), wav_seconds(&b).unwrap());
    let (slow, fast) = (wav_seconds(&slow).unwrap(), wav_seconds(&fast).unwrap());
    assert!(b > a * 4.0, "{a} s then {b} s");
    assert!(slow > b && b > fast, "{slow} s, {b} s, {fast} s");
}

#[tokio::test]
async fn voices_and_languages_change_the_voice() {
    let text = "Good morning.";
    let (_, rachel) = speak(json!({"text": text, "voice": "Rachel"})).await;
    let (_, roger) = speak(json!({"text": text, "voice": "Roger"})).await;
    assert_ne!(samples(&rachel), samples(&roger));
    let (_, german) =
        speak(json!({"text": "Guten Morgen.", "voice": "Roger", "language_code": "de"})).await;
    assert_eq!(
        samples(&german),
        samples(&espeak_directly("Guten Morgen.", "de+m1", 175))
    );
}

#[tokio::test]
async fn an_unknown_language_fails_the_job_clearly() {
    let (req, ctx, ..) = run_of(model(MODEL), json!({"text": "hi", "language_code": "xq"}));
    let e = LocalSpeech::default().run(req, ctx).await.unwrap_err();
    assert_eq!(e.retry, invokd_core::provider::Retry::No);
    assert!(e.message.contains("xq+"), "{}", e.message);
}

#[tokio::test]
async fn a_cancel_stops_it_at_once() {
    let (req, ctx, _sink, cancel) = run_of(model(MODEL), json!({"text": "Long. ".repeat(20_000)}));
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
    });
    let started = std::time::Instant::now();
    let e = LocalSpeech::default().run(req, ctx).await.unwrap_err();
    assert_eq!(e.error_type, "client_cancelled");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_missing_program_is_named_with_how_to_install_it() {
    let e = LocalSpeech::new("/nonexistent/espeak-ng")
        .check()
        .unwrap_err();
    assert!(e.to_string().contains("apt-get install espeak-ng"), "{e}");
    assert!(
        LocalSpeech::default()
            .check()
            .unwrap()
            .contains("eSpeak NG")
    );
}
