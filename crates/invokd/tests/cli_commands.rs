//! The CLI's other commands and its global flags against the real server: models, keys and
//! auth contexts; -t/-u/-c/--context and their environment variables; both output formats;
//! --trace without the key; retries of a server that answers 503 twice; and the exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::{
    Json, Router,
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use serde_json::{Value, json};
use support::{TestServer, run_cli};

#[tokio::test]
async fn models_list_and_show_in_text_and_json() {
    let server = TestServer::start().await;
    let list = server.cli(&["models", "list"]).await;
    list.ok();
    let header = list.stdout.lines().next().unwrap();
    assert!(
        header.starts_with("Model") && header.contains("Kind"),
        "{}",
        list.stdout
    );
    assert_eq!(list.stdout.lines().count(), 15, "14 models and a header");
    assert!(list.stdout.contains("fal-ai/flux/schnell"));

    let json = server
        .cli(&["models", "list", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(json["data"].as_array().unwrap().len(), 14);
    assert!(json["data"][0]["input_schema"].is_object());

    let show = server.cli(&["models", "show", "fal-ai/flux/schnell"]).await;
    show.ok();
    assert!(show.stdout.contains("prompt *"), "{}", show.stdout);
    assert!(show.stdout.contains("num_images"), "{}", show.stdout);
    assert!(show.stdout.contains("--input KEY=VALUE"), "{}", show.stdout);
    let one = server
        .cli(&["models", "show", "fal-ai/flux/schnell", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(one["id"], "fal-ai/flux/schnell");

    let missing = server.cli(&["models", "show", "nobody/nothing"]).await;
    missing.code(2);
    assert!(missing.stderr.contains("models list"), "{}", missing.stderr);

    // Without any server configured, the built-in catalog answers.
    let dir = tempfile::tempdir().unwrap();
    let offline = run_cli(
        &dir.path().join("none.toml"),
        &["models", "list", "-o", "json"],
        &[],
        None,
    )
    .await;
    assert_eq!(offline.ok().json()["data"].as_array().unwrap().len(), 14);
}

#[tokio::test]
async fn keys_are_made_listed_and_revoked_with_the_admin_token() {
    let server = TestServer::start().await;
    let made = server
        .cli(&["keys", "create", "--name", "ci", "--project", "team-a"])
        .await;
    made.ok();
    let key = made
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("invk_"))
        .expect("the secret is shown once")
        .to_owned();
    assert!(made.stdout.contains("team-a"), "{}", made.stdout);

    // The new key works for the API...
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cli.toml");
    let with_key = |k: String| {
        let url = server.url.clone();
        let cfg = cfg.clone();
        async move {
            run_cli(
                &cfg,
                &["async-invoke", "list", "-o", "json"],
                &[
                    ("INVOKD_ACCESS_TOKEN", k.as_str()),
                    ("INVOKD_API_URL", url.as_str()),
                ],
                None,
            )
            .await
        }
    };
    with_key(key.clone()).await.ok();

    let list = server
        .cli(&["keys", "list", "-o", "json"])
        .await
        .ok()
        .json();
    let keys = list["keys"].as_array().unwrap();
    let ci = keys.iter().find(|k| k["name"] == "ci").unwrap();
    assert_eq!(ci["project"], "team-a");
    assert!(
        !list.to_string().contains(&key),
        "a list never shows secrets"
    );
    let id = ci["id"].as_str().unwrap().to_owned();
    let text = server.cli(&["keys", "list"]).await;
    assert!(text.ok().stdout.contains(&id), "{}", text.stdout);

    // ... until it is revoked: then it is refused at once, an API error with a hint.
    server.cli(&["keys", "revoke", &id]).await.ok();
    let refused = with_key(key).await;
    refused.code(3);
    assert!(
        refused.stderr.contains("--access-token"),
        "{}",
        refused.stderr
    );

    // The admin API needs the admin token, not an access key.
    let wrong = server
        .cli(&["keys", "list", "--admin-token", "not-the-token"])
        .await;
    wrong.code(3);
    let none = run_cli(
        &cfg,
        &["keys", "list"],
        &[("INVOKD_API_URL", server.url.as_str())],
        None,
    )
    .await;
    none.code(2);
    assert!(none.stderr.contains("admin token"), "{}", none.stderr);
}

#[tokio::test]
async fn contexts_are_saved_switched_and_chosen_by_flag_or_environment() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let cli = |args: &'static [&'static str], envs: Vec<(&'static str, String)>| {
        let cfg = cfg.clone();
        async move {
            let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            run_cli(&cfg, args, &envs, None).await
        }
    };

    // No key anywhere: a usage error that says how to give one.
    let none = cli(&["async-invoke", "list"], vec![]).await;
    none.code(2);
    assert!(none.stderr.contains("auth init"), "{}", none.stderr);

    // A wrong key is refused at init, and nothing is saved.
    let bad = run_cli(
        &cfg,
        &["auth", "init", "--context", "prod", "-u", &server.url],
        &[],
        Some("invk_wrong\n"),
    )
    .await;
    bad.code(3);
    assert!(bad.stderr.contains("--no-verify"), "{}", bad.stderr);
    assert!(!cfg.exists());

    // The key from stdin, checked against the server; the first context becomes current.
    run_cli(
        &cfg,
        &["auth", "init", "--context", "prod", "-u", &server.url],
        &[],
        Some(&format!("{}\n", server.key)),
    )
    .await
    .ok();
    cli(&["async-invoke", "list"], vec![]).await.ok();
    // A second context, saved without checking; it does not become current.
    run_cli(
        &cfg,
        &[
            "auth",
            "init",
            "--context",
            "elsewhere",
            "-u",
            "http://127.0.0.1:9",
            "-t",
            "invk_other",
            "--no-verify",
        ],
        &[],
        None,
    )
    .await
    .ok();
    let contexts = cli(&["auth", "list", "-o", "json"], vec![])
        .await
        .ok()
        .json();
    let names: Vec<(&str, bool)> = contexts
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["current"].as_bool().unwrap()))
        .collect();
    assert_eq!(names, [("elsewhere", false), ("prod", true)]);
    assert!(
        !std::fs::read_to_string(&cfg).unwrap().is_empty(),
        "saved in the config file"
    );

    // --context and INVOKD_CONTEXT choose; an unreachable server is a network error (5).
    let away = cli(
        &[
            "async-invoke",
            "list",
            "--context",
            "elsewhere",
            "--http-retry-max",
            "0",
        ],
        vec![],
    )
    .await;
    away.code(5);
    assert!(away.stderr.contains("invokd serve"), "{}", away.stderr);
    cli(
        &["async-invoke", "list", "--http-retry-max", "0"],
        vec![("INVOKD_CONTEXT", "elsewhere".into())],
    )
    .await
    .code(5);
    // -u and -t override the context.
    cli(
        &["async-invoke", "list", "--context", "elsewhere"],
        vec![
            ("INVOKD_API_URL", server.url.clone()),
            ("INVOKD_ACCESS_TOKEN", server.key.clone()),
        ],
    )
    .await
    .ok();

    // Switching makes it current; switching to nothing is a usage error.
    cli(&["auth", "switch", "elsewhere"], vec![]).await.ok();
    cli(&["async-invoke", "list", "--http-retry-max", "0"], vec![])
        .await
        .code(5);
    let missing = cli(&["auth", "switch", "nowhere"], vec![]).await;
    missing.code(2);
    assert!(
        missing.stderr.contains("elsewhere, prod"),
        "{}",
        missing.stderr
    );
    cli(&["auth", "switch", "prod"], vec![]).await.ok();
    // -c names the config file, over INVOKD_CONFIG (which points at an empty one here).
    let other = dir.path().join("other.toml");
    let cfg_arg = cfg.to_str().unwrap();
    run_cli(&other, &["async-invoke", "list"], &[], None)
        .await
        .code(2);
    run_cli(&other, &["async-invoke", "list", "-c", cfg_arg], &[], None)
        .await
        .ok();
    cli(&["auth", "remove", "elsewhere"], vec![]).await.ok();
    let text = cli(&["auth", "list"], vec![]).await;
    assert!(
        text.ok().stdout.contains("prod") && !text.stdout.contains("elsewhere"),
        "{}",
        text.stdout
    );
}

#[tokio::test]
async fn trace_shows_each_request_without_the_key_and_verbose_says_where() {
    let server = TestServer::start().await;
    let out = server
        .cli_create(&["-m", "fal-ai/flux/schnell", "--prompt", "traced", "--trace"])
        .await;
    out.ok();
    assert!(out.stderr.contains("POST"), "{}", out.stderr);
    assert!(out.stderr.contains("/v1/async-invoke"), "{}", out.stderr);
    assert!(out.stderr.contains("202"), "{}", out.stderr);
    assert!(
        !out.stderr.contains(&server.key),
        "the key never shows: {}",
        out.stderr
    );
    let verbose = server.cli(&["async-invoke", "list", "--verbose"]).await;
    assert!(
        verbose.ok().stderr.contains(&server.url),
        "{}",
        verbose.stderr
    );
}

/// A server whose create answers 503 `fails` times, then a queued job; get answers it done.
async fn flaky(fails: usize) -> (String, Arc<AtomicUsize>) {
    let creates = Arc::new(AtomicUsize::new(0));
    let seen = creates.clone();
    let job = |status: &str| {
        json!({"request_id": "01a0b1c2-0000-7000-8000-000000000001", "model_id": "fal-ai/flux/schnell",
               "status": status, "created_at": "2026-01-01T00:00:00Z", "started_at": null,
               "completed_at": null, "output": null, "error": null, "tags": []})
    };
    let queued = job("QUEUED");
    let done = job("COMPLETED");
    let router = Router::new()
        .route(
            "/v1/async-invoke",
            post(move || {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let queued = queued.clone();
                async move {
                    if n < fails {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            [("retry-after", "0")],
                            Json(json!({"id": "service_unavailable", "message": "busy"})),
                        )
                            .into_response()
                    } else {
                        (StatusCode::ACCEPTED, Json(queued)).into_response()
                    }
                }
            }),
        )
        .route(
            "/v1/async-invoke/{id}",
            get(move || {
                let done = done.clone();
                async move { Json(done) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, creates)
}

#[tokio::test]
async fn a_server_answering_503_twice_is_retried_and_the_limit_is_an_api_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cli.toml");
    let (url, creates) = flaky(2).await;
    let args = |url: &str, retries: &'static str| {
        vec![
            "async-invoke".to_owned(),
            "create".into(),
            "-m".into(),
            "fal-ai/flux/schnell".into(),
            "--prompt".into(),
            "x".into(),
            "-u".into(),
            url.to_owned(),
            "-t".into(),
            "invk_test".into(),
            "--http-retry-wait-min".into(),
            "0.05".into(),
            "--http-retry-max".into(),
            retries.into(),
            "-o".into(),
            "json".into(),
            "--verbose".into(),
        ]
    };
    let a = args(&url, "5");
    let argv: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = run_cli(&cfg, &argv, &[], None).await;
    assert_eq!(out.ok().json()["status"], "QUEUED");
    assert_eq!(creates.load(Ordering::SeqCst), 3, "two 503s, then accepted");
    assert!(
        out.stderr.contains("503"),
        "retries are told: {}",
        out.stderr
    );

    let (url, creates) = flaky(2).await;
    let a = args(&url, "1");
    let argv: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = run_cli(&cfg, &argv, &[], None).await;
    out.code(3);
    assert!(out.stderr.contains("busy"), "{}", out.stderr);
    assert_eq!(creates.load(Ordering::SeqCst), 2, "one try and one retry");
}

#[tokio::test]
async fn exit_codes_name_the_kind_of_failure() {
    let server = TestServer::start().await;
    // Usage: an unknown flag, a missing model, retry waits the wrong way round.
    server.cli_create(&["--bogus"]).await.code(2);
    let no_model = server.cli_create(&["--prompt", "x"]).await;
    no_model.code(2);
    let retries = server
        .cli(&[
            "async-invoke",
            "list",
            "--http-retry-wait-min",
            "2",
            "--http-retry-wait-max",
            "0.5",
        ])
        .await;
    retries.code(2);
    assert!(
        retries.stderr.contains("must not be less"),
        "{}",
        retries.stderr
    );
    // API: a model the server does not have, a job that does not exist.
    let unknown = server
        .cli_create(&["-m", "nobody/nothing", "--prompt", "x"])
        .await;
    unknown.code(3);
    assert!(unknown.stderr.contains("models list"), "{}", unknown.stderr);
    let missing = server
        .cli(&[
            "async-invoke",
            "get",
            "01a0b1c2-0000-7000-8000-000000000001",
        ])
        .await;
    missing.code(3);
    assert!(missing.stderr.contains("not found") || missing.stderr.contains("not_found"));
    // Network: nothing listens there.
    let down = server
        .cli(&[
            "async-invoke",
            "list",
            "-u",
            "http://127.0.0.1:9",
            "--http-retry-max",
            "0",
        ])
        .await;
    down.code(5);
    // A bad URL is a usage error.
    server
        .cli(&["async-invoke", "list", "-u", "ftp://example.com"])
        .await
        .code(2);
    let v: Value = server
        .cli(&["async-invoke", "list", "-o", "json"])
        .await
        .ok()
        .json();
    assert!(
        v["invocations"].as_array().unwrap().is_empty(),
        "nothing was stored"
    );
}
