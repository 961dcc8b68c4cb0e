//! The command provider against real programs (sh, python3).

use std::time::{Duration, Instant};

use invokd_core::provider::Retry;
use serde_json::json;

use super::*;
use crate::testing::{model, run_of};

const MODEL: &str = "fal-ai/flux/schnell";

fn provider(command: &[&str]) -> CommandProvider {
    CommandProvider::new(CommandConfig {
        models: vec![ModelCommand {
            pattern: "fal-ai/*".into(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            env: BTreeMap::new(),
            workdir: None,
        }],
    })
}

#[tokio::test]
async fn stdin_stdout_files_and_logs() {
    // Reads the input from stdin, writes a file, logs on stderr, prints the result.
    let script = r#"
input=$(cat)
echo "got $input" >&2
printf 'PNGDATA' > "$INVOKD_OUTPUT_DIR/city.png"
echo '{"images": [{"url": "city.png", "width": 8, "height": 8}], "prompt": "{input.prompt}"}'
"#;
    let p = provider(&["sh", "-c", script]);
    let (req, ctx, sink, _) = run_of(model(MODEL), json!({"prompt": "a city"}));
    let out = p.run(req, ctx).await.unwrap().output;
    let image = &out["images"][0];
    assert!(
        image["url"].as_str().unwrap().ends_with("/1/city.png"),
        "{out:?}"
    );
    assert_eq!(image["content_type"], "image/png");
    assert_eq!(image["file_size"], 7);
    assert_eq!(image["file_name"], "city.png");
    // Placeholders are filled in every argument, the script included.
    assert_eq!(out["prompt"], "a city");
    assert_eq!(sink.file("/city.png").unwrap().as_ref(), b"PNGDATA");
    let logs = sink.logs.lock().unwrap();
    assert!(
        logs.iter()
            .any(|l| l.level == "STDERR" && l.message.contains(r#""prompt":"a city""#))
    );
}

#[tokio::test]
async fn a_failing_program_fails_the_job_with_its_message() {
    let p = provider(&[
        "sh",
        "-c",
        "echo working >&2; echo 'out of memory' >&2; exit 3",
    ]);
    let (req, ctx, ..) = run_of(model(MODEL), json!({"prompt": "x"}));
    let e = p.run(req, ctx).await.unwrap_err();
    assert_eq!(e.retry, Retry::No);
    assert_eq!(e.message, "sh exited with 3: out of memory");
    let p = provider(&["sh", "-c", "echo not json"]);
    let (req, ctx, ..) = run_of(model(MODEL), json!({"prompt": "x"}));
    let e = p.run(req, ctx).await.unwrap_err();
    assert!(e.message.contains("no JSON object"), "{}", e.message);
}

#[tokio::test]
async fn a_cancel_kills_the_program() {
    let p = provider(&["sh", "-c", "sleep 60; echo '{}'"]);
    let (req, ctx, _, cancel) = run_of(model(MODEL), json!({"prompt": "x"}));
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancel.cancel();
    });
    let started = Instant::now();
    let e = p.run(req, ctx).await.unwrap_err();
    assert_eq!(e.error_type, "client_cancelled");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn templates_fill_the_input_and_leave_the_rest() {
    let (req, ..) = run_of(model(MODEL), json!({"prompt": "a b", "num_images": 2}));
    let dir = Path::new("/tmp/out");
    assert_eq!(expand("--prompt={input.prompt}", &req, dir), "--prompt=a b");
    assert_eq!(expand("{input.num_images}x", &req, dir), "2x");
    assert_eq!(
        expand("{output_dir}/{model}", &req, dir),
        "/tmp/out/fal-ai/flux/schnell"
    );
    assert_eq!(expand("{other} {", &req, dir), "{other} {");
}

#[test]
fn config_files_in_toml_or_json_pick_the_most_specific_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let toml_path = dir.path().join("w.toml");
    std::fs::write(
        &toml_path,
        r#"
[[models]]
pattern = "acme/*"
command = ["gen", "{input.prompt}"]

[[models]]
pattern = "acme/special"
command = ["special"]
env = { MODE = "fast" }
"#,
    )
    .unwrap();
    let c = CommandConfig::load(&toml_path).unwrap();
    assert_eq!(c.for_model("acme/special").unwrap().command, ["special"]);
    assert_eq!(c.for_model("acme/other").unwrap().command[0], "gen");
    assert!(c.for_model("other/x").is_none());
    let json_path = dir.path().join("w.json");
    std::fs::write(
        &json_path,
        r#"{"models": [{"pattern": "a/*", "command": []}]}"#,
    )
    .unwrap();
    assert!(
        CommandConfig::load(&json_path)
            .unwrap_err()
            .to_string()
            .contains("empty command")
    );
}
