//! Waiting on a terminal, under a real pseudo-terminal: a live line per job (status, queue
//! position, elapsed time, latest log line), and Ctrl-C asking whether to cancel the jobs or
//! leave them running. (Plain lines when piped are checked in cli_async_invoke.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    io::{Read as _, Write as _},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use serde_json::json;
use support::{Options, TestServer};

/// `invokd ARGS` running on a pseudo-terminal, its output drawn by a terminal emulator.
struct OnTerminal {
    screen: Arc<Mutex<vt100::Parser>>,
    input: Box<dyn std::io::Write + Send>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
}

const ROWS: u16 = 30;
const COLS: u16 = 160;

impl OnTerminal {
    fn start(server: &TestServer, args: &[&str]) -> Self {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: ROWS,
                cols: COLS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_invokd"));
        cmd.args(args);
        cmd.env("INVOKD_CONFIG", server.cli_config());
        cmd.env("TERM", "xterm-256color");
        for var in ["INVOKD_ACCESS_TOKEN", "INVOKD_API_URL", "INVOKD_CONTEXT"] {
            cmd.env_remove(var);
        }
        let child = pty.slave.spawn_command(cmd).unwrap();
        drop(pty.slave);
        let mut reader = pty.master.try_clone_reader().unwrap();
        let input = pty.master.take_writer().unwrap();
        let screen = Arc::new(Mutex::new(vt100::Parser::new(ROWS, COLS, 0)));
        let sink = screen.clone();
        std::thread::spawn(move || {
            // The master stays open in this thread, so the terminal lives as long as the child.
            let _master = pty.master;
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().process(&buf[..n]);
            }
        });
        Self {
            screen,
            input,
            child,
        }
    }

    /// What the terminal shows now, row by row.
    fn text(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// Waits until what was drawn satisfies `ok`.
    async fn until(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let t = self.text();
            if ok(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {what}; the screen:\n{t}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn type_keys(&mut self, keys: &str) {
        self.input.write_all(keys.as_bytes()).unwrap();
        self.input.flush().unwrap();
    }

    async fn exit_code(mut self) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.exit_code();
            }
            assert!(
                Instant::now() < deadline,
                "the CLI did not exit; the screen:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A server that runs one job at a time, each for a minute.
async fn slow_server() -> TestServer {
    TestServer::start_with(
        Options::default()
            .set("--emulator-latency-ms", "60000")
            .set("--max-concurrency", "1"),
    )
    .await
}

async fn create(server: &TestServer, prompt: &str) -> String {
    let job = server
        .create(&json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": prompt}}))
        .await;
    job["request_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn live_lines_then_ctrl_c_cancels_the_jobs_when_asked_to() {
    let server = slow_server().await;
    let running = create(&server, "first").await;
    let queued = create(&server, "second").await;
    let mut term = OnTerminal::start(&server, &["async-invoke", "wait", &running, &queued]);

    // One live line per job: the running one with its latest log line, the queued one with
    // how many queued jobs start before it (none), both with the time since they were created.
    let screen = term
        .until("a line per job", |t| {
            t.lines().any(|l| {
                l.contains(&running) && l.contains("IN_PROGRESS") && l.contains("emulator")
            }) && t
                .lines()
                .any(|l| l.contains(&queued) && l.contains("QUEUED (0 ahead)"))
        })
        .await;
    let line = screen.lines().rev().find(|l| l.contains(&running)).unwrap();
    assert!(
        line.split_whitespace()
            .any(|w| w.ends_with('s') && w[..w.len() - 1].parse::<f64>().is_ok()),
        "elapsed time on the line: {line}"
    );

    // Ctrl-C asks; the second choice cancels both.
    term.type_keys("\x03");
    term.until("the question", |t| {
        t.contains("Cancel the 2 unfinished jobs or leave running?")
    })
    .await;
    term.type_keys("\x1b[B\r");
    term.until("both canceled", |t| {
        t.contains(&format!("{running}: CANCELED")) && t.contains(&format!("{queued}: CANCELED"))
    })
    .await;
    assert_eq!(term.exit_code().await, 130);
    for id in [&running, &queued] {
        let job = server.wait(id).await;
        assert_eq!(job["status"], "CANCELED", "{job}");
    }
}

#[tokio::test]
async fn ctrl_c_then_enter_leaves_the_job_running_and_says_how_to_resume() {
    let server = slow_server().await;
    let id = create(&server, "keep going").await;
    let mut term = OnTerminal::start(&server, &["async-invoke", "wait", &id]);
    term.until("the live line", |t| t.contains("IN_PROGRESS"))
        .await;
    term.type_keys("\x03");
    term.until("the question", |t| {
        t.contains("Cancel the job or leave running?")
    })
    .await;
    term.type_keys("\r");
    term.until("how to resume", |t| {
        t.contains(&format!("invokd async-invoke wait {id}"))
    })
    .await;
    assert_eq!(term.exit_code().await, 130);
    assert_eq!(server.get(&id).await["status"], "IN_PROGRESS");
}
