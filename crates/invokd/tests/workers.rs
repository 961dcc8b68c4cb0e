//! Real speech and remote workers: the gateway's local-speech provider against the real
//! espeak-ng, and the real `invokd worker` processes against a real gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{process::Stdio, time::Duration};

use serde_json::{Value, json};
use support::{Options, TestServer};

const SPEECH: &str = "fal-ai/elevenlabs/tts/multilingual-v2";

fn samples(wav: &[u8]) -> Vec<i16> {
    invokd_providers::speech::wav_samples(wav).expect("a 16-bit WAV file")
}

/// What espeak-ng itself makes of `text` (the text on stdin, as the provider gives it): run here
/// by hand, apart from the provider, as the oracle its output is held to.
fn espeak(text: &str, voice: &str, wpm: u32) -> Vec<i16> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("direct.wav");
    let mut child = std::process::Command::new("espeak-ng")
        .args(["-v", voice, "-s", &wpm.to_string(), "-w"])
        .arg(&out)
        .stdin(Stdio::piped())
        .spawn()
        .expect("espeak-ng is installed by scripts/fetch-tools");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    samples(&std::fs::read(out).unwrap())
}

/// A finished speech job, read through both surfaces: its WAV is espeak-ng's speech of `text`.
async fn assert_spoken(server: &TestServer, id: &str, text: &str, voice: &str, wpm: u32) {
    let job = server.wait(id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    let audio = &job["output"]["audio"];
    assert_eq!(audio["content_type"], "audio/wav", "{job}");
    let (ct, wav) = server.download(audio["url"].as_str().unwrap()).await;
    assert_eq!(ct, "audio/wav");
    assert_eq!(audio["file_size"], wav.len());
    let got = samples(&wav);
    assert_eq!(
        got,
        espeak(text, voice, wpm),
        "not espeak-ng's speech of the text"
    );
    // Speech, not silence: about a second of 22,050 Hz audio or more, and loud enough.
    assert!(got.len() > 22_050, "{} samples", got.len());
    assert!(got.iter().filter(|s| s.unsigned_abs() > 1000).count() > got.len() / 20);
    // fal's surface shows the same file.
    let resp = server
        .http
        .get(server.at(&format!("/fal-ai/elevenlabs/requests/{id}")))
        .header("authorization", format!("Key {}", server.key))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let fal: Value = resp.json().await.unwrap();
    let (_, fal_wav) = server.download(fal["audio"]["url"].as_str().unwrap()).await;
    assert_eq!(fal_wav, wav);
}

#[tokio::test]
async fn speech_runs_in_the_gateway_with_espeak_ng_and_no_worker() {
    let server = TestServer::start_with(
        Options::default()
            .arg("--routes")
            .arg("fal-ai/elevenlabs/*=local-speech"),
    )
    .await;
    let text = "Workers run the models on your own machines.";
    let job = server
        .create(
            &json!({"model_id": SPEECH, "input": {"text": text, "voice": "George", "speed": 1.2}}),
        )
        .await;
    let id = job["request_id"].as_str().unwrap();
    assert_spoken(&server, id, text, "en-gb+m3", 210).await;
    // Through fal's surface too.
    let resp = server
        .http
        .post(server.at(&format!("/{SPEECH}")))
        .header("authorization", format!("Key {}", server.key))
        .json(&json!({"text": "Hello from the fal surface."}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.json::<Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_spoken(&server, &id, "Hello from the fal surface.", "en-us+f1", 175).await;
}

#[tokio::test]
async fn a_route_to_local_speech_without_espeak_ng_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_invokd"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--routes",
            "fal-ai/elevenlabs/*=local-speech",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("PATH", dir.path())
        .env("INVOKD_CONFIG", dir.path().join("client.toml"))
        .env("INVOKD_BOOTSTRAP_KEY", support::KEY)
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("apt-get install espeak-ng"), "{stderr}");
}
