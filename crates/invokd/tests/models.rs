//! Every catalog model runs end to end on the emulator, and its files are real files of the
//! requested kind and shape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Cursor;

use invokd_core::catalog::{Catalog, Kind};
use serde_json::{Value, json};
use support::TestServer;

/// The decoded images of an output, checked against the sizes and types it claims.
async fn check_images(server: &TestServer, output: &Value) -> Vec<image::DynamicImage> {
    let images = output["images"].as_array().expect("images");
    let mut decoded = Vec::new();
    for img in images {
        let (ct, bytes) = server.download(img["url"].as_str().unwrap()).await;
        assert_eq!(ct, img["content_type"].as_str().unwrap(), "{img}");
        let format = image::guess_format(&bytes).unwrap();
        let expected = match ct.as_str() {
            "image/jpeg" => image::ImageFormat::Jpeg,
            "image/png" => image::ImageFormat::Png,
            "image/webp" => image::ImageFormat::WebP,
            other => panic!("unexpected content type {other}"),
        };
        assert_eq!(format, expected, "the file is not the type it claims");
        let pic = image::load_from_memory(&bytes).unwrap();
        assert_eq!(
            u64::from(pic.width()),
            img["width"].as_u64().unwrap(),
            "{img}"
        );
        assert_eq!(
            u64::from(pic.height()),
            img["height"].as_u64().unwrap(),
            "{img}"
        );
        decoded.push(pic);
    }
    // Fields beyond `images` follow the model's own output shape.
    if let Some(flags) = output.get("has_nsfw_concepts") {
        assert_eq!(
            flags.as_array().map(Vec::len),
            Some(images.len()),
            "{output}"
        );
    }
    if let Some(seed) = output.get("seed") {
        assert!(seed.is_u64(), "{output}");
    }
    if let Some(timings) = output.get("timings") {
        assert!(timings.is_object(), "{output}");
    }
    decoded
}

/// The duration in seconds and the sample rate of a WAV file at a URL.
async fn wav(server: &TestServer, file: &Value) -> (f64, u32) {
    let (ct, bytes) = server.download(file["url"].as_str().unwrap()).await;
    assert_eq!(ct, "audio/wav");
    assert_eq!(file["content_type"], "audio/wav");
    assert_eq!(
        file["file_size"].as_u64(),
        Some(bytes.len() as u64),
        "{file}"
    );
    let reader = hound::WavReader::new(Cursor::new(bytes)).unwrap();
    let spec = reader.spec();
    (
        f64::from(reader.duration()) / f64::from(spec.sample_rate),
        spec.sample_rate,
    )
}

#[tokio::test]
async fn each_of_the_fourteen_models_completes_with_real_files() {
    let server = TestServer::start().await;
    // The catalog's own test holds it to the fourteen models of the seeds.
    let catalog = Catalog::embedded().unwrap();
    assert_eq!(catalog.iter().count(), 14);
    let mut ids = Vec::new();
    for model in catalog.iter() {
        let input = match model.kind {
            Kind::Speech => json!({"text": "Hello from the emulator."}),
            Kind::Audio => json!({"prompt": "rain on a tin roof", "seconds_total": 3}),
            Kind::Image => json!({"prompt": "a lighthouse in a storm"}),
        };
        let model = model.id.as_str();
        let job = server
            .create(&json!({"model_id": model, "input": input}))
            .await;
        assert_eq!(job["status"], "QUEUED");
        assert_eq!(job["model_id"], model);
        ids.push((model, job["request_id"].as_str().unwrap().to_owned()));
    }
    for (model, id) in ids {
        let done = server.wait(&id).await;
        assert_eq!(done["status"], "COMPLETED", "{model}: {done}");
        let output = &done["output"];
        assert!(
            output["emulator"]
                .as_str()
                .unwrap_or_default()
                .contains("emulator"),
            "{model}: {output}"
        );
        if output.get("images").is_some() {
            let images = check_images(&server, output).await;
            assert!(!images.is_empty(), "{model}");
            if output.get("prompt").is_some() {
                assert_eq!(output["prompt"], "a lighthouse in a storm", "{model}");
            }
        } else {
            let (secs, _) = wav(&server, &output["audio"]).await;
            assert!(secs > 0.4, "{model}: {secs} s");
        }
        // Timestamps are RFC 3339 and in order.
        let created =
            chrono::DateTime::parse_from_rfc3339(done["created_at"].as_str().unwrap()).unwrap();
        let started =
            chrono::DateTime::parse_from_rfc3339(done["started_at"].as_str().unwrap()).unwrap();
        let completed =
            chrono::DateTime::parse_from_rfc3339(done["completed_at"].as_str().unwrap()).unwrap();
        assert!(created <= started && started <= completed, "{done}");
    }
}

#[tokio::test]
async fn images_have_the_requested_size_count_and_format_and_follow_the_seed() {
    let server = TestServer::start().await;
    let body = json!({"model_id": "fal-ai/flux/schnell", "input": {
        "prompt": "a red fox", "image_size": {"width": 640, "height": 480},
        "num_images": 3, "output_format": "png", "seed": 42
    }});
    let a = server.create(&body).await;
    let b = server.create(&body).await;
    let a = server.wait(a["request_id"].as_str().unwrap()).await;
    let b = server.wait(b["request_id"].as_str().unwrap()).await;
    let images = check_images(&server, &a["output"]).await;
    assert_eq!(images.len(), 3);
    for img in &images {
        assert_eq!((img.width(), img.height()), (640, 480));
    }
    assert_eq!(a["output"]["images"][0]["content_type"], "image/png");
    assert_eq!(a["output"]["seed"], 42);
    assert_ne!(
        images[0].as_bytes(),
        images[1].as_bytes(),
        "the images of one job differ"
    );
    let again = check_images(&server, &b["output"]).await;
    assert_eq!(
        images[0].as_bytes(),
        again[0].as_bytes(),
        "the same seed gives the same image"
    );

    // Presets (protocol.md 4.1), with the default format: JPEG.
    for (preset, w, h) in [
        ("square_hd", 1024, 1024),
        ("square", 512, 512),
        ("portrait_4_3", 768, 1024),
        ("portrait_16_9", 576, 1024),
        ("landscape_4_3", 1024, 768),
        ("landscape_16_9", 1024, 576),
    ] {
        let job = server
            .create(&json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "x", "image_size": preset}}))
            .await;
        let done = server.wait(job["request_id"].as_str().unwrap()).await;
        let img = &done["output"]["images"][0];
        assert_eq!(
            (img["width"].as_u64(), img["height"].as_u64()),
            (Some(w), Some(h)),
            "{preset}"
        );
        assert_eq!(img["content_type"], "image/jpeg");
        check_images(&server, &done["output"]).await;
    }
}

#[tokio::test]
async fn aspect_ratio_models_follow_the_ratio() {
    let server = TestServer::start().await;
    for (model, ratio, expected) in [
        ("fal-ai/ideogram/v2", "16:9", 16.0 / 9.0),
        ("fal-ai/ideogram/v2", "1:1", 1.0),
        ("fal-ai/imagen4/preview", "9:16", 9.0 / 16.0),
        ("fal-ai/imagen4/preview/fast", "4:3", 4.0 / 3.0),
    ] {
        let job = server
            .create(
                &json!({"model_id": model, "input": {"prompt": "a bridge", "aspect_ratio": ratio}}),
            )
            .await;
        let done = server.wait(job["request_id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        let img = &check_images(&server, &done["output"]).await[0];
        let got = f64::from(img.width()) / f64::from(img.height());
        assert!(
            (got - expected).abs() < 0.02,
            "{model} {ratio}: {}x{}",
            img.width(),
            img.height()
        );
    }
}

#[tokio::test]
async fn audio_lasts_seconds_total_and_speech_follows_the_text() {
    let server = TestServer::start().await;
    let audio = server
        .create(&json!({"model_id": "fal-ai/stable-audio-25/text-to-audio", "input": {"prompt": "techno", "seconds_total": 7}}))
        .await;
    let short = server
        .create(&json!({"model_id": "fal-ai/elevenlabs/tts/multilingual-v2", "input": {"text": "Short."}}))
        .await;
    let long_text =
        "This sentence is a good deal longer than the other one, so it takes longer to say.";
    let long = server
        .create(&json!({"model_id": "fal-ai/elevenlabs/tts/multilingual-v2", "input": {"text": long_text}}))
        .await;
    let fast = server
        .create(&json!({"model_id": "fal-ai/elevenlabs/tts/multilingual-v2", "input": {"text": long_text, "speed": 1.2}}))
        .await;

    let audio = server.wait(audio["request_id"].as_str().unwrap()).await;
    let (secs, _) = wav(&server, &audio["output"]["audio"]).await;
    assert!((secs - 7.0).abs() < 0.01, "{secs}");
    assert!(audio["output"]["seed"].is_u64());

    let mut lengths = Vec::new();
    for job in [short, long, fast] {
        let done = server.wait(job["request_id"].as_str().unwrap()).await;
        lengths.push(wav(&server, &done["output"]["audio"]).await.0);
    }
    assert!(lengths[1] > lengths[0] * 3.0, "{lengths:?}");
    assert!(
        lengths[2] < lengths[1],
        "a faster voice speaks for less time: {lengths:?}"
    );
}
