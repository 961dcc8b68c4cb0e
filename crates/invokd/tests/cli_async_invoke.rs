//! `invokd async-invoke` against a real server: create with doctl's flags, typed `--input`,
//! `--request FILE` and `--request -`, tags and webhooks; get, status, list with filters, cancel,
//! wait for one or many, downloads of real files, both output formats, and the exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::{Options, TestServer};

/// The request id in the first data row of a text table.
fn first_id(table: &str) -> String {
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("Request ID"), "{table}");
    lines
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn create_get_and_status_in_text_and_json() {
    let server = TestServer::start().await;

    // doctl's example, text output: a table with the request id.
    let out = server
        .cli_create(&[
            "--model",
            "fal-ai/flux/schnell",
            "--prompt",
            "A futuristic city at sunset",
            "--tag",
            "type=test",
            "--tag",
            "env=ci",
        ])
        .await;
    out.ok();
    let header = out.stdout.lines().next().unwrap();
    for col in ["Request ID", "Model", "Status", "Created At", "Tags"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(out.stdout.contains("fal-ai/flux/schnell"), "{}", out.stdout);
    assert!(out.stdout.contains("type=test,env=ci"), "{}", out.stdout);
    let id = first_id(&out.stdout);
    let done = server.wait(&id).await;
    assert_eq!(
        done["tags"],
        json!([{"key": "type", "value": "test"}, {"key": "env", "value": "ci"}])
    );
    assert_eq!(done["output"]["prompt"], "A futuristic city at sunset");

    // get: the API's object as JSON, a readable block as text.
    let got = server
        .cli(&["async-invoke", "get", &id, "-o", "json"])
        .await;
    assert_eq!(got.ok().json(), done);
    let text = server.cli(&["async-invoke", "get", &id]).await;
    text.ok();
    for line in [
        format!("Request ID     {id}"),
        "Status         COMPLETED".into(),
        "Files          http".into(),
        "Prompt         A futuristic city at sunset".into(),
    ] {
        assert!(text.stdout.contains(&line), "{line:?} in\n{}", text.stdout);
    }

    // status, both ways; global flags may come first.
    let st = server
        .cli(&["-o", "json", "async-invoke", "status", &id])
        .await;
    assert_eq!(st.ok().json()["status"], "COMPLETED");
    let st = server.cli(&["async", "status", &id]).await;
    assert_eq!(first_id(&st.ok().stdout), id);
    assert!(st.stdout.contains("COMPLETED"));

    // An unknown id is the API's 404: exit code 3, the server's message.
    let missing = server
        .cli(&[
            "async-invoke",
            "get",
            "01a20000-0000-7000-8000-000000000000",
        ])
        .await;
    missing.code(3);
    assert!(
        missing.stderr.contains("404") && missing.stderr.contains("not found"),
        "{}",
        missing.stderr
    );
}

#[tokio::test]
async fn input_values_are_typed_by_the_models_schema() {
    let server = TestServer::start().await;
    let out = server
        .cli_create(&[
            "-m",
            "fal-ai/flux/schnell",
            "--prompt",
            "typed",
            "--input",
            "num_images=2",
            "--input",
            "image_size.width=64",
            "-i",
            "image_size.height=48",
            "--input",
            "seed=7",
            "--input",
            "output_format=png",
            "--wait",
            "-o",
            "json",
        ])
        .await;
    let inv = out.ok().json();
    assert_eq!(inv["status"], "COMPLETED", "{inv}");
    let images = inv["output"]["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "num_images=2 was sent as a number: {inv}");
    assert_eq!(images[0]["width"], 64);
    assert_eq!(images[0]["height"], 48);
    assert_eq!(images[0]["content_type"], "image/png");
    assert_eq!(inv["output"]["seed"], 7);

    // A value of the wrong type is a usage error naming the field and the type, before any
    // request is made.
    let bad = server
        .cli_create(&[
            "-m",
            "fal-ai/flux/schnell",
            "--prompt",
            "x",
            "--input",
            "num_images=two",
        ])
        .await;
    bad.code(2);
    assert!(
        bad.stderr
            .contains("num_images: expected an integer from 1 to 4, got \"two\""),
        "{}",
        bad.stderr
    );
    let bad = server
        .cli_create(&["-m", "fal-ai/flux/schnell", "--input", "oops"])
        .await;
    bad.code(2);
    assert!(bad.stderr.contains("is not key=value"), "{}", bad.stderr);
    // A value the schema refuses is the server's 422, with the field's path.
    let refused = server
        .cli_create(&[
            "-m",
            "fal-ai/flux/schnell",
            "--prompt",
            "x",
            "--input",
            "num_images=10",
        ])
        .await;
    refused.code(3);
    assert!(
        refused.stderr.contains("input.num_images"),
        "{}",
        refused.stderr
    );
    assert_eq!(server.stored_jobs().await, 1);
}

#[tokio::test]
async fn request_bodies_from_a_file_and_from_stdin() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(
        &file,
        json!({"model_id": "fal-ai/fast-sdxl", "input": {"prompt": "from a file", "image_size": {"width": 32, "height": 32}},
               "tags": [{"key": "src", "value": "file"}]})
        .to_string(),
    )
    .unwrap();
    let out = server
        .cli_create(&[
            "--request",
            file.to_str().unwrap(),
            "--tag",
            "more=1",
            "--wait",
            "-o",
            "json",
        ])
        .await;
    let inv = out.ok().json();
    assert_eq!(inv["model_id"], "fal-ai/fast-sdxl");
    assert_eq!(inv["output"]["prompt"], "from a file");
    assert_eq!(
        inv["tags"],
        json!([{"key": "src", "value": "file"}, {"key": "more", "value": "1"}])
    );

    // stdin, with the model from -m and a flag adding to the input.
    let body = json!({"input": {"prompt": "from stdin", "image_size": "square"}}).to_string();
    let out = server
        .cli_stdin(
            &[
                "async-invoke",
                "create",
                "--request",
                "-",
                "-m",
                "fal-ai/flux/schnell",
                "--input",
                "num_images=2",
                "--wait",
                "-o",
                "json",
            ],
            &body,
        )
        .await;
    let inv = out.ok().json();
    assert_eq!(inv["model_id"], "fal-ai/flux/schnell");
    assert_eq!(inv["output"]["prompt"], "from stdin");
    assert_eq!(inv["output"]["images"].as_array().unwrap().len(), 2);
    assert_eq!(
        inv["output"]["images"][0]["width"], 512,
        "square is 512x512"
    );

    // Broken bodies are usage errors that say what is wrong.
    let out = server
        .cli_stdin(&["async-invoke", "create", "--request", "-"], "{not json")
        .await;
    out.code(2);
    assert!(
        out.stderr.contains("--request stdin: not valid JSON"),
        "{}",
        out.stderr
    );
    let out = server
        .cli_stdin(
            &["async-invoke", "create", "--request", "-"],
            r#"{"input": {}}"#,
        )
        .await;
    out.code(2);
    assert!(out.stderr.contains("model_id"), "{}", out.stderr);
    let out = server
        .cli_create(&["--request", "/nonexistent/body.json"])
        .await;
    out.code(1);
    assert!(
        out.stderr
            .contains("cannot read --request /nonexistent/body.json"),
        "{}",
        out.stderr
    );
    // No model at all.
    let out = server.cli_create(&["--prompt", "x"]).await;
    out.code(2);
    assert!(
        out.stderr.contains("--model (-m) is required"),
        "{}",
        out.stderr
    );
    // An unknown flag is clap's usage error.
    server.cli_create(&["--nope"]).await.code(2);
    // An unknown model is the server's 404 naming it, with a hint.
    let out = server
        .cli_create(&["-m", "fal-ai/nope", "--prompt", "x"])
        .await;
    out.code(3);
    assert!(out.stderr.contains("fal-ai/nope"), "{}", out.stderr);
    assert!(out.stderr.contains("invokd models list"), "{}", out.stderr);
}

#[tokio::test]
async fn audio_and_speech_with_doctls_flags_download_real_files() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = server
        .cli_create(&[
            "-m",
            "fal-ai/stable-audio-25/text-to-audio",
            "--prompt",
            "Techno",
            "--seconds-total",
            "2",
            "--download",
            out_dir.to_str().unwrap(),
        ])
        .await;
    out.ok();
    let saved = saved_paths(&out.stdout);
    assert_eq!(saved.len(), 1, "{}", out.stdout);
    assert!(saved[0].ends_with("-0.wav"), "{saved:?}");
    let wav = hound::WavReader::open(&saved[0]).unwrap();
    let secs = wav.duration() as f64 / wav.spec().sample_rate as f64;
    assert!((secs - 2.0).abs() < 0.05, "--seconds-total 2 gave {secs} s");

    let out = server
        .cli_create(&[
            "-m",
            "fal-ai/elevenlabs/tts/multilingual-v2",
            "--text",
            "Hello there",
            "--download",
            out_dir.to_str().unwrap(),
            "-o",
            "json",
        ])
        .await;
    let inv = out.ok().json();
    let id = inv["request_id"].as_str().unwrap();
    let path = out_dir.join(format!("{id}-0.wav"));
    assert!(
        out.stderr.contains(&format!("saved {}", path.display())),
        "{}",
        out.stderr
    );
    assert!(hound::WavReader::open(&path).unwrap().duration() > 0);
}

/// The paths on the `Saved` rows of a text block.
fn saved_paths(stdout: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_saved = false;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("Saved") {
            in_saved = true;
            out.push(rest.trim().to_owned());
        } else if in_saved && line.starts_with("   ") {
            out.push(line.trim().to_owned());
        } else {
            in_saved = false;
        }
    }
    out
}

#[tokio::test]
async fn downloads_are_named_by_request_and_never_overwrite_without_force() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("images");
    let d = out_dir.to_str().unwrap();
    let out = server
        .cli_create(&[
            "-m",
            "fal-ai/flux/schnell",
            "--prompt",
            "two images",
            "--input",
            "num_images=2",
            "--input",
            "image_size=square",
            "--wait",
            "--download",
            d,
        ])
        .await;
    out.ok();
    let id = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Request ID"))
        .unwrap()
        .trim()
        .to_owned();
    let expected: Vec<String> = (0..2)
        .map(|n| out_dir.join(format!("{id}-{n}.jpeg")).display().to_string())
        .collect();
    assert_eq!(saved_paths(&out.stdout), expected, "{}", out.stdout);
    for p in &expected {
        let img = image::open(p).unwrap();
        assert_eq!((img.width(), img.height()), (512, 512));
    }

    // Again into the same directory: refused, nothing touched, exit 1, and the fix named.
    std::fs::write(&expected[1], b"mine").unwrap();
    let again = server
        .cli(&["async-invoke", "get", &id, "--download", d])
        .await;
    again.code(1);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert_eq!(std::fs::read(&expected[1]).unwrap(), b"mine");
    // With --force it is replaced.
    let forced = server
        .cli(&["async-invoke", "get", &id, "--download", d, "--force"])
        .await;
    forced.ok();
    assert_eq!(saved_paths(&forced.stdout), expected);
    assert!(image::open(&expected[1]).is_ok());
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        2,
        "no partial files left"
    );

    // A job that has not finished has nothing to download yet.
    let slow =
        TestServer::start_with(Options::default().set("--emulator-latency-ms", "30000")).await;
    let job = slow
        .create(&json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "slow"}}))
        .await;
    let out = slow
        .cli(&[
            "async-invoke",
            "get",
            job["request_id"].as_str().unwrap(),
            "--download",
            d,
        ])
        .await;
    out.code(1);
    assert!(out.stderr.contains("wait for them with"), "{}", out.stderr);
}

#[tokio::test]
async fn list_filters_by_status_model_tag_and_time_and_pages() {
    let server = TestServer::start_with(
        Options::default()
            .arg("--emulator-model-latency")
            .arg("fal-ai/fast-sdxl=600000"),
    )
    .await;
    let mut flux = Vec::new();
    for i in 0..3 {
        let j = server
            .create(
                &json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": format!("f{i}")},
                            "tags": [{"key": "batch", "value": if i == 0 { "a" } else { "b" }}]}),
            )
            .await;
        flux.push(j["request_id"].as_str().unwrap().to_owned());
    }
    for id in &flux {
        server.wait(id).await;
    }
    let slow = server
        .create(&json!({"model_id": "fal-ai/fast-sdxl", "input": {"prompt": "slow"}}))
        .await;
    let slow_id = slow["request_id"].as_str().unwrap().to_owned();

    let ids = |v: &Value| -> Vec<String> {
        v["invocations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["request_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = server
        .cli(&["async-invoke", "list", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        ids(&all),
        [
            slow_id.clone(),
            flux[2].clone(),
            flux[1].clone(),
            flux[0].clone()
        ]
    );
    assert_eq!(all["next_cursor"], Value::Null);

    let by_model = server
        .cli(&[
            "async-invoke",
            "list",
            "--model",
            "fal-ai/fast-sdxl",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(ids(&by_model.ok().json()), std::slice::from_ref(&slow_id));
    let by_status = server
        .cli(&[
            "async-invoke",
            "list",
            "--status",
            "completed",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(ids(&by_status.ok().json()).len(), 3);
    let by_tag = server
        .cli(&["async-invoke", "list", "--tag", "batch=b", "-o", "json"])
        .await;
    assert_eq!(ids(&by_tag.ok().json()), [flux[2].clone(), flux[1].clone()]);
    let after = server
        .cli(&[
            "async-invoke",
            "list",
            "--created-after",
            "2000-01-01",
            "--created-before",
            "2999-01-01T00:00:00Z",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(ids(&after.ok().json()).len(), 4);
    let none = server
        .cli(&[
            "async-invoke",
            "list",
            "--created-after",
            "2999-01-01",
            "-o",
            "json",
        ])
        .await;
    assert!(ids(&none.ok().json()).is_empty());

    // Pages: --limit and --cursor, or --all.
    let page = server
        .cli(&["async-invoke", "list", "--limit", "3", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(ids(&page).len(), 3);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let rest = server
        .cli(&[
            "async-invoke",
            "list",
            "--limit",
            "3",
            "--cursor",
            &cursor,
            "-o",
            "json",
        ])
        .await;
    assert_eq!(ids(&rest.ok().json()), [flux[0].clone()]);
    let every = server
        .cli(&[
            "async-invoke",
            "list",
            "--limit",
            "1",
            "--all",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(ids(&every.ok().json()), ids(&all));

    // Text: a table, newest first, and where the next page is.
    let text = server.cli(&["async-invoke", "list", "--limit", "2"]).await;
    text.ok();
    let rows: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(rows.len(), 3, "{}", text.stdout);
    // The slow job is queued or already running, depending on the dispatcher's timing.
    assert!(
        rows[1].starts_with(&slow_id)
            && (rows[1].contains("QUEUED") || rows[1].contains("IN_PROGRESS")),
        "{}",
        text.stdout
    );
    assert!(
        rows[2].contains("COMPLETED") && rows[2].ends_with("batch=b"),
        "{}",
        text.stdout
    );
    assert!(text.stderr.contains("--cursor"), "{}", text.stderr);

    // Bad filters are usage errors.
    let bad = server
        .cli(&["async-invoke", "list", "--status", "done"])
        .await;
    bad.code(2);
    assert!(
        bad.stderr
            .contains("queued, in_progress, completed, failed or canceled"),
        "{}",
        bad.stderr
    );
    server
        .cli(&["async-invoke", "list", "--created-after", "yesterday"])
        .await
        .code(2);
    server
        .cli(&["async-invoke", "list", "--tag", "nokey"])
        .await
        .code(2);
    server
        .cli(&["async-invoke", "list", "--limit", "0"])
        .await
        .code(2);
}

#[tokio::test]
async fn cancel_one_or_many_and_a_finished_job_is_a_conflict() {
    let server = TestServer::start_with(
        Options::default()
            .set("--emulator-latency-ms", "60000")
            .set("--max-concurrency", "1"),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let j = server
            .create(
                &json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": format!("c{i}")}}),
            )
            .await;
        ids.push(j["request_id"].as_str().unwrap().to_owned());
    }
    // The second and third are queued behind the first: cancelled at once.
    let one = server
        .cli(&["async-invoke", "cancel", &ids[1], "-o", "json"])
        .await;
    assert_eq!(one.ok().json()["status"], "CANCELED");
    let two = server
        .cli(&["async-invoke", "cancel", &ids[2], &ids[0]])
        .await;
    two.ok();
    assert!(
        two.stdout.lines().nth(1).unwrap().starts_with(&ids[2]),
        "{}",
        two.stdout
    );
    assert_eq!(server.wait(&ids[0]).await["status"], "CANCELED");

    let again = server.cli(&["async-invoke", "cancel", &ids[1]]).await;
    again.code(3);
    assert!(
        again.stderr.contains("409") && again.stderr.contains("already finished"),
        "{}",
        again.stderr
    );
}

#[tokio::test]
async fn wait_for_many_jobs_then_exit_codes_for_failed_canceled_and_timed_out_ones() {
    let server = TestServer::start_with(
        Options::default()
            .set("--emulator-latency-ms", "200")
            .arg("--emulator-model-latency")
            .arg("fal-ai/fast-sdxl=60000"),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let j = server
            .create(&json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": format!("w{i}"), "image_size": "square"}}))
            .await;
        ids.push(j["request_id"].as_str().unwrap().to_owned());
    }
    let mut args = vec!["async-invoke", "wait"];
    args.extend(ids.iter().map(String::as_str));
    args.extend(["-o", "json"]);
    let out = server.cli(&args).await;
    let arr = out.ok().json();
    let got: Vec<&str> = arr
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "in the order asked"
    );
    assert!(
        arr.as_array()
            .unwrap()
            .iter()
            .all(|i| i["status"] == "COMPLETED")
    );
    // Without a terminal, progress is plain lines on stderr.
    for id in &ids {
        assert!(
            out.stderr.contains(&format!("{id}  COMPLETED")),
            "{}",
            out.stderr
        );
    }
    let text = server.cli(&["async-invoke", "wait", &ids[0]]).await;
    assert!(
        text.ok().stdout.contains("Status         COMPLETED"),
        "{}",
        text.stdout
    );

    // A run past its limit FAILS: exit code 4, the job printed, the reason on stderr.
    let body = json!({"model_id": "fal-ai/fast-sdxl", "input": {"prompt": "too slow"}, "run_timeout_seconds": 0.3});
    let failing = server
        .cli_stdin(
            &[
                "async-invoke",
                "create",
                "--request",
                "-",
                "--wait",
                "-o",
                "json",
            ],
            &body.to_string(),
        )
        .await;
    failing.code(4);
    assert_eq!(failing.json()["status"], "FAILED");
    assert!(
        failing.stderr.contains("ended FAILED"),
        "{}",
        failing.stderr
    );

    // A job cancelled while it is waited for: exit code 4 too.
    let slow = server
        .create(&json!({"model_id": "fal-ai/fast-sdxl", "input": {"prompt": "cancel me"}}))
        .await;
    let slow_id = slow["request_id"].as_str().unwrap().to_owned();
    let config = server.cli_config();
    let waiting = {
        let id = slow_id.clone();
        tokio::spawn(async move {
            support::run_cli(&config, &["async-invoke", "wait", &id], &[], None).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    server.cli(&["async-invoke", "cancel", &slow_id]).await.ok();
    let out = waiting.await.unwrap();
    out.code(4);
    assert!(out.stdout.contains("CANCELED"), "{}", out.stdout);

    // --timeout: exit code 6, the job goes on.
    let slow = server
        .create(&json!({"model_id": "fal-ai/fast-sdxl", "input": {"prompt": "still running"}}))
        .await;
    let id = slow["request_id"].as_str().unwrap();
    let out = server
        .cli(&["async-invoke", "wait", id, "--timeout", "0.5"])
        .await;
    out.code(6);
    assert!(out.stderr.contains("had not finished"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("async-invoke wait {id}")),
        "{}",
        out.stderr
    );
    assert_ne!(server.get(id).await["status"], "CANCELED");

    // Waiting for an unknown id: the API's 404.
    server
        .cli(&[
            "async-invoke",
            "wait",
            "01a20000-0000-7000-8000-000000000000",
        ])
        .await
        .code(3);
}

#[tokio::test]
async fn a_webhook_is_attached_to_the_job() {
    let server = TestServer::start_with(Options::default().arg("--allow-private-urls")).await;
    let out = server
        .cli_create(&[
            "-m",
            "fal-ai/flux/schnell",
            "--prompt",
            "hook",
            "--webhook",
            "http://127.0.0.1:9/hook",
            "-o",
            "json",
        ])
        .await;
    let id = out.ok().json()["request_id"].as_str().unwrap().to_owned();
    server.wait(&id).await;
    let got = server
        .cli(&["async-invoke", "get", &id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(got["webhook"]["url"], "http://127.0.0.1:9/hook");
    let text = server.cli(&["async-invoke", "get", &id]).await;
    assert!(
        text.ok()
            .stdout
            .contains("Webhook        http://127.0.0.1:9/hook"),
        "{}",
        text.stdout
    );
}

#[allow(dead_code)]
fn exists(p: &Path) -> bool {
    p.exists()
}

#[tokio::test]
async fn doctls_command_path_and_its_aliases_run_the_same_commands() {
    let server = TestServer::start().await;

    // seed 002's example, as written with `invokd` in place of `doctl`.
    let out = server
        .cli(&[
            "inference",
            "async-invoke",
            "create",
            "--model",
            "fal-ai/flux/schnell",
            "--prompt",
            "A futuristic city at sunset",
        ])
        .await;
    out.ok();
    let id = first_id(&out.stdout);
    assert_eq!(
        server.wait(&id).await["output"]["prompt"],
        "A futuristic city at sunset"
    );

    // The full path and the short aliases reach the same commands and flags.
    for path in [["serverless-inference", "async-invoke"], ["si", "async"]] {
        let mut args: Vec<&str> = path.to_vec();
        args.extend(["get", &id, "-o", "json"]);
        let got = server.cli(&args).await;
        got.ok();
        let job: Value = serde_json::from_str(&got.stdout).unwrap();
        assert_eq!(job["request_id"], id.as_str(), "{path:?}");
    }
}
