"""SIGTERM and SIGINT on a real worker process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_gateway import TOKEN, FakeGateway

HERE = Path(__file__).parent


def spawn(gateway: FakeGateway, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "slow_worker.py")],
        env={
            **os.environ,
            "INVOKD_API_URL": gateway.url,
            "INVOKD_WORKER_TOKEN": TOKEN,
            "INVOKD_WORKER_MODELS": "acme/*",
            "INVOKD_WORKER_SLOTS": "2",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_started(proc: subprocess.Popen[str], n: int) -> None:
    assert proc.stdout is not None
    seen = 0
    while seen < n:
        line = proc.stdout.readline()
        assert line, "the worker exited early"
        seen += line.count("started ")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_finishes_running_jobs_within_the_grace_and_releases_the_rest(gateway: FakeGateway, sig: int) -> None:
    proc = spawn(gateway, INVOKD_WORKER_GRACE_SECONDS="1")
    try:
        quick = gateway.submit({"prompt": "quick"})
        slow = gateway.submit({"prompt": "slow"})
        wait_started(proc, 2)
        signalled = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(10) == 0
        took = time.monotonic() - signalled
    finally:
        proc.kill()
    out = proc.stdout.read() if proc.stdout else ""
    assert 0.9 <= took < 8, (took, out)
    assert gateway.jobs[quick].status == "COMPLETED", out
    slow_job = gateway.jobs[slow]
    # Handed back without using its attempt.
    assert (slow_job.status, slow_job.ends, slow_job.attempt) == ("QUEUED", ["release"], 1), out
    # No take after the signal.
    takes = [t for t, _ in gateway.calls("take")]
    assert all(t < signalled + 0.1 for t in takes), out


def test_a_second_signal_releases_at_once(gateway: FakeGateway) -> None:
    proc = spawn(gateway, INVOKD_WORKER_GRACE_SECONDS="30")
    try:
        slow = gateway.submit({"prompt": "slow"})
        wait_started(proc, 1)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert time.monotonic() - signalled < 5
    finally:
        proc.kill()
    assert gateway.jobs[slow].ends == ["release"]


@pytest.mark.parametrize("target", ["handler", "Predictor"])
def test_the_command_line_runs_a_handler_from_a_file(gateway: FakeGateway, target: str) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "invokd_worker",
            f"{HERE / 'slow_worker.py'}:{target}",
            "--api-url",
            gateway.url,
            "--token",
            TOKEN,
            "--models",
            "acme/*",
            "--slots",
            "3",
            "--label",
            "gpu=none",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        job = gateway.wait_status(gateway.submit({"prompt": "quick"}), "COMPLETED")
        assert job.output == {"seed": 1}
        (info,) = gateway.workers.values()
        assert (info["slots"], info["models"], info["labels"]) == (3, ["acme/*"], {"gpu": "none"})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    out = proc.stdout.read() if proc.stdout else ""
    assert ("setup done" in out) == (target == "Predictor"), out
