//! The how-to's four curl bodies, sent byte for byte, and the file URLs they lead to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use support::TestServer;

const FLUX: &str = r#"{
"model_id": "fal-ai/flux/schnell",
"input": { "prompt": "A futuristic city at sunset" }
}"#;

const FAST_SDXL: &str = r#"{
"model_id": "fal-ai/fast-sdxl",
"input": {
"prompt": "A futuristic cityscape at sunset, with flying cars and towering skyscrapers.",
"output_format": "landscape_4_3",
"num_inference_steps": 4,
"guidance_scale": 3.5,
"num_images": 1,
"enable_safety_checker": true
},
"tags": [
{"key": "type", "value": "test"}
]
}"#;

const STABLE_AUDIO: &str = r#"{
"model_id": "fal-ai/stable-audio-25/text-to-audio",
"input": {
"prompt": "Techno song with futuristic sounds",
"seconds_total": 60
},
"tags": [
{ "key": "type", "value": "test" }
]
}"#;

const TTS: &str = r#"{
"model_id": "fal-ai/elevenlabs/tts/multilingual-v2",
"input": {
"text": "This text-to-speech example uses DigitalOcean multilingual voice."
},
"tags": [
{ "key": "type", "value": "test" }
]
}"#;

async fn submit(server: &TestServer, body: &str) -> Value {
    let resp = server.create_raw(body).await;
    assert_eq!(resp.status(), 202);
    assert!(resp.headers().contains_key("x-request-id"));
    let created: Value = resp.json().await.unwrap();
    // The QUEUED object of the how-to: every field present, the not-yet ones null.
    assert_eq!(created["status"], "QUEUED");
    for field in ["completed_at", "started_at", "error", "output"] {
        assert!(created[field].is_null(), "{field} in {created}");
    }
    assert!(chrono::DateTime::parse_from_rfc3339(created["created_at"].as_str().unwrap()).is_ok());
    assert!(
        uuid_like(created["request_id"].as_str().unwrap()),
        "{created}"
    );
    created
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn the_four_curl_examples_complete() {
    let server = TestServer::start().await;
    let jobs = [
        submit(&server, FLUX).await,
        submit(&server, FAST_SDXL).await,
        submit(&server, STABLE_AUDIO).await,
        submit(&server, TTS).await,
    ];
    assert_eq!(jobs[0]["tags"], serde_json::json!([]));
    for job in &jobs[1..] {
        assert_eq!(
            job["tags"],
            serde_json::json!([{"key": "type", "value": "test"}])
        );
    }
    let done: Vec<Value> = {
        let mut v = Vec::new();
        for job in &jobs {
            v.push(server.wait(job["request_id"].as_str().unwrap()).await);
        }
        v
    };
    for d in &done {
        assert_eq!(d["status"], "COMPLETED", "{d}");
    }
    assert_eq!(
        done[1]["tags"],
        serde_json::json!([{"key": "type", "value": "test"}])
    );

    // The fast-sdxl example asks for `landscape_4_3` in `output_format`: a 1024x768 JPEG, as in
    // the how-to's sample response.
    let img = &done[1]["output"]["images"][0];
    assert_eq!(
        (img["width"].as_u64(), img["height"].as_u64()),
        (Some(1024), Some(768)),
        "{img}"
    );
    assert_eq!(img["content_type"], "image/jpeg");
    let (ct, bytes) = server.download(img["url"].as_str().unwrap()).await;
    assert_eq!(ct, "image/jpeg");
    let pic = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg).unwrap();
    assert_eq!((pic.width(), pic.height()), (1024, 768));

    // Sixty seconds of audio.
    let audio = &done[2]["output"]["audio"];
    let (_, bytes) = server.download(audio["url"].as_str().unwrap()).await;
    let wav = hound::WavReader::new(std::io::Cursor::new(bytes)).unwrap();
    assert_eq!(wav.duration() / wav.spec().sample_rate, 60);

    // The status route answers the same object.
    let id = jobs[0]["request_id"].as_str().unwrap();
    let status: Value = server
        .http
        .get(server.at(&format!("/v1/async-invoke/{id}/status")))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "COMPLETED");
    assert_eq!(status["request_id"], id);
}

#[tokio::test]
async fn file_urls_work_without_the_key_and_refuse_tampering_and_expiry() {
    let server = TestServer::start().await;
    let job = submit(&server, FLUX).await;
    let done = server.wait(job["request_id"].as_str().unwrap()).await;
    let url = done["output"]["images"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(url.starts_with(&server.url), "{url}");

    // No key needed, the right type, and a cache lifetime no longer than the URL's.
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    assert!(
        resp.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("private, max-age=")
    );

    let refused = |u: String| async move {
        let resp = reqwest::get(&u).await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        (status, body)
    };
    let (base, query) = url.split_once('?').unwrap();
    let sig = query.split("sig=").nth(1).unwrap();
    let expires: i64 = query
        .split('&')
        .find_map(|p| p.strip_prefix("expires="))
        .unwrap()
        .parse()
        .unwrap();

    let flipped = format!(
        "{}{}",
        if sig.starts_with('0') { "1" } else { "0" },
        &sig[1..]
    );
    for bad in [
        base.to_owned(),
        format!("{base}?expires={expires}&sig={flipped}"),
        format!("{base}?expires={}&sig={sig}", expires + 3600),
        format!("{}x?{query}", base),
    ] {
        let (status, body) = refused(bad.clone()).await;
        assert_eq!(status, 401, "{bad}: {body}");
        assert_eq!(body["id"], "unauthorized");
    }

    // A correctly signed URL whose time is past is refused too.
    let secret = hex::decode(
        std::fs::read_to_string(server.data_dir.join("url-signing.key"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let signer = invokd_core::signing::UrlSigner::new(secret);
    let key = base.split("/files/").nth(1).unwrap();
    let past = chrono::Utc::now().timestamp() - 10;
    let (status, body) = refused(format!(
        "{base}?expires={past}&sig={}",
        signer.sign(key, past)
    ))
    .await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    // ...and the same signer's fresh signature is accepted, so the check above is the expiry.
    let future = chrono::Utc::now().timestamp() + 60;
    assert_eq!(
        reqwest::get(format!(
            "{base}?expires={future}&sig={}",
            signer.sign(key, future)
        ))
        .await
        .unwrap()
        .status(),
        200
    );
}
