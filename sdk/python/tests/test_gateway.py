"""The Pillow example worker against a real gateway: ``invokd serve`` (``INVOKD_BIN``) routes
``fal-ai/flux/schnell`` to workers; jobs submitted through DigitalOcean's API and fal's queue
complete with images that download by their signed URLs and decode at the requested size."""

from __future__ import annotations

import io
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "pillow-worker" / "worker.py"
MODEL = "fal-ai/flux/schnell"
#: Served by tests/slow_worker.py, whose jobs wait for their cancel.
SLOW_MODEL = "fal-ai/fast-sdxl"
SLOW_WORKER = Path(__file__).parent / "slow_worker.py"


@dataclass
class Gateway:
    url: str
    key: str
    process: subprocess.Popen[bytes]
    log: Path


def _bin() -> Path:
    value = os.environ.get("INVOKD_BIN")
    if not value:
        pytest.skip("INVOKD_BIN names no invokd binary (scripts/test passes its own)")
    path = Path(value)
    if not path.is_absolute():
        path = ROOT / path
    assert os.access(path, os.X_OK), f"INVOKD_BIN={value} is not an executable"
    return path


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    binary = _bin()
    with tempfile.TemporaryDirectory(prefix="invokd-sdk-") as work:
        key = f"invk_sdk_{secrets.token_hex(16)}"
        log = Path(work) / "server.log"
        out = Path(work) / "stdout"
        env = {
            **os.environ,
            "INVOKD_BOOTSTRAP_KEY": key,
            "INVOKD_ADMIN_TOKEN": key,
            "INVOKD_CONFIG": str(Path(work) / "client.toml"),
        }
        with open(out, "wb") as stdout, open(log, "wb") as stderr:
            proc = subprocess.Popen(
                [
                    str(binary),
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--data-dir",
                    str(Path(work) / "data"),
                    "--routes",
                    f"{MODEL}=workers,{SLOW_MODEL}=workers",
                    # Heartbeats every second: a cancel reaches a worker within one.
                    "--lease-seconds",
                    "3",
                    "--rate-limit-per-second",
                    "0",
                ],
                env=env,
                stdout=stdout,
                stderr=stderr,
            )
        try:
            url = ""
            deadline = time.monotonic() + 60
            while not url:
                for line in out.read_text().splitlines():
                    if line.startswith("invokd listening on "):
                        url = line.removeprefix("invokd listening on ").strip()
                if proc.poll() is not None:
                    if 'provider "workers", which is not configured' in log.read_text():
                        pytest.skip("this invokd has no workers provider yet")
                    pytest.fail(f"invokd exited {proc.returncode}:\n{log.read_text()[-3000:]}")
                assert time.monotonic() < deadline, "invokd did not start"
                time.sleep(0.05)
            # A gateway from before the worker endpoints answers 404 there; it has nothing to test.
            probe = httpx.post(f"{url}/v1/worker/take", json={})
            if probe.status_code == 404:
                pytest.skip("this invokd has no worker endpoints (POST /v1/worker/take is 404)")
            yield Gateway(url, key, proc, log)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _worker_token(gateway: Gateway, name: str, model: str) -> str:
    made = httpx.post(
        f"{gateway.url}/v1/admin/worker-tokens",
        headers={"Authorization": f"Bearer {gateway.key}"},
        json={"name": name, "models": [model]},
    )
    assert made.status_code in (200, 201), made.text
    token = made.json()["token"]
    assert token.startswith("invw_")
    return str(token)


@pytest.fixture(scope="module")
def worker(gateway: Gateway) -> Iterator[subprocess.Popen[bytes]]:
    token = _worker_token(gateway, "sdk-test", MODEL)
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE)],
            env={
                **os.environ,
                "INVOKD_API_URL": gateway.url,
                "INVOKD_WORKER_TOKEN": token,
                "INVOKD_WORKER_NAME": "pillow-test",
                "INVOKD_WORKER_SLOTS": "2",
                "INVOKD_WORKER_LABELS": "gpu=none",
                "INVOKD_WORKER_GRACE_SECONDS": "5",
            },
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    code = None
            else:
                code = proc.returncode
            output.seek(0)
            text = output.read().decode(errors="replace")
            print(text[-4000:])
            assert code == 0, f"the worker exited {code} after SIGTERM:\n{text[-4000:]}"


def _check_images(images: list[dict[str, Any]], size: tuple[int, int], fmt: str, count: int) -> None:
    assert len(images) == count, images
    for image in images:
        assert (image["width"], image["height"]) == size
        assert image["content_type"] == f"image/{fmt.lower()}"
        # The signed URL needs no key.
        got = httpx.get(image["url"], timeout=30)
        assert got.status_code == 200, (image["url"], got.status_code, got.text[:300])
        decoded = Image.open(io.BytesIO(got.content))
        decoded.load()
        assert (decoded.size, decoded.format) == (size, fmt)


def _server_log(gateway: Gateway) -> str:
    return gateway.log.read_text(errors="replace")[-3000:]


def test_a_job_through_digitalocean_api_is_run_by_the_worker(gateway: Gateway, worker: Any) -> None:
    auth = {"Authorization": f"Bearer {gateway.key}"}
    created = httpx.post(
        f"{gateway.url}/v1/async-invoke",
        headers=auth,
        json={
            "model_id": MODEL,
            "input": {
                "prompt": "A futuristic city at sunset",
                "image_size": {"width": 320, "height": 240},
                "num_images": 2,
                "output_format": "png",
                "seed": 11,
            },
        },
    )
    assert created.status_code == 202, created.text
    request_id = created.json()["request_id"]
    deadline = time.monotonic() + 60
    while True:
        job = httpx.get(
            f"{gateway.url}/v1/async-invoke/{request_id}",
            headers={**auth, "Prefer": "wait=10"},
            timeout=30,
        ).json()
        if job["status"] in ("COMPLETED", "FAILED"):
            break
        assert time.monotonic() < deadline, f"still {job['status']}:\n{_server_log(gateway)}"
    assert job["status"] == "COMPLETED", (job, _server_log(gateway))
    output = job["output"]
    assert output["seed"] == 11 and output["prompt"] == "A futuristic city at sunset"
    assert output["has_nsfw_concepts"] == [False, False]
    _check_images(output["images"], (320, 240), "PNG", 2)


def test_a_job_through_fal_queue_is_run_by_the_worker(gateway: Gateway, worker: Any) -> None:
    auth = {"Authorization": f"Key {gateway.key}"}
    submitted = httpx.post(
        f"{gateway.url}/{MODEL}",
        headers=auth,
        json={"prompt": "A lighthouse in a storm", "image_size": "landscape_4_3"},
    )
    assert submitted.status_code == 200, submitted.text
    queued = submitted.json()
    deadline = time.monotonic() + 60
    while True:
        status = httpx.get(queued["status_url"], headers=auth, params={"logs": 1}).json()
        if status["status"] == "COMPLETED":
            break
        assert time.monotonic() < deadline, f"still {status}:\n{_server_log(gateway)}"
        time.sleep(0.2)
    # The worker's log lines reach fal's readers.
    messages = [line["message"] for line in status.get("logs") or []]
    assert any(m.startswith("drawing 1 image(s) of 1024x768 as jpeg") for m in messages), status
    result = httpx.get(queued["response_url"], headers=auth)
    assert result.status_code == 200, result.text
    _check_images(result.json()["images"], (1024, 768), "JPEG", 1)


def test_the_worker_is_listed_with_its_presence(gateway: Gateway, worker: Any) -> None:
    listed = httpx.get(
        f"{gateway.url}/v1/admin/workers", headers={"Authorization": f"Bearer {gateway.key}"}
    )
    assert listed.status_code == 200, listed.text
    mine = [w for w in listed.json()["workers"] if w["name"] == "pillow-test"]
    assert len(mine) == 1, listed.json()
    w = mine[0]
    assert (w["models"], w["slots"], w["labels"]) == ([MODEL], 2, {"gpu": "none"})
    assert w["version"] == "invokd-worker 0.1.0"
    assert w["completed"] >= 2


def _slow_worker(gateway: Gateway, grace: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SLOW_WORKER)],
        env={
            **os.environ,
            "INVOKD_API_URL": gateway.url,
            "INVOKD_WORKER_TOKEN": _worker_token(gateway, "slow", SLOW_MODEL),
            "INVOKD_WORKER_MODELS": SLOW_MODEL,
            "INVOKD_WORKER_GRACE_SECONDS": grace,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_started(proc: subprocess.Popen[str], timeout: float = 30) -> None:
    """Until the worker says it started a job; a worker that never does fails the test."""
    assert proc.stdout is not None
    started = threading.Event()

    def read(out: typing.IO[str]) -> None:
        for line in iter(out.readline, ""):
            if "started " in line:
                started.set()
                return

    reader = threading.Thread(target=read, args=(proc.stdout,), daemon=True)
    reader.start()
    while not started.wait(0.1):
        assert proc.poll() is None or reader.is_alive(), "the worker exited early"
        timeout -= 0.1
        assert timeout > 0, "the worker started no job in time"



def test_a_cancel_reaches_the_running_worker_within_a_heartbeat(gateway: Gateway) -> None:
    auth = {"Authorization": f"Key {gateway.key}"}
    proc = _slow_worker(gateway, "5")
    try:
        queued = httpx.post(f"{gateway.url}/{SLOW_MODEL}", headers=auth, json={"prompt": "slow"}).json()
        _wait_started(proc)
        # The heartbeats carry the job's log line to fal's readers while it runs.
        deadline = time.monotonic() + 10
        while True:
            status = httpx.get(queued["status_url"], headers=auth, params={"logs": 1}).json()
            messages = [line["message"] for line in status.get("logs") or []]
            if "waiting for the cancel" in messages:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert status["status"] == "IN_PROGRESS"
        asked = time.monotonic()
        cancel = httpx.put(queued["cancel_url"], headers=auth)
        assert cancel.status_code == 202, cancel.text
        while status["status"] != "COMPLETED":
            assert time.monotonic() - asked < 10, status
            time.sleep(0.1)
            status = httpx.get(queued["status_url"], headers=auth).json()
        # Within a heartbeat (a second here) and the worker's fail.
        assert time.monotonic() - asked < 4, time.monotonic() - asked
        result = httpx.get(queued["response_url"], headers=auth)
        assert result.status_code == 499, result.text
        assert result.json()["error_type"] == "client_cancelled"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_sigterm_hands_a_running_job_back_to_the_queue(gateway: Gateway) -> None:
    auth = {"Authorization": f"Bearer {gateway.key}"}
    proc = _slow_worker(gateway, "0.5")
    try:
        created = httpx.post(
            f"{gateway.url}/v1/async-invoke",
            headers=auth,
            json={"model_id": SLOW_MODEL, "input": {"prompt": "slow"}},
        )
        assert created.status_code == 202, created.text
        request_id = created.json()["request_id"]
        _wait_started(proc)
        url = f"{gateway.url}/v1/async-invoke/{request_id}"
        assert httpx.get(url, headers=auth).json()["status"] == "IN_PROGRESS"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        proc.kill()
    out = proc.stdout.read() if proc.stdout else ""
    assert "released (QUEUED)" in out, out
    # Released, not lapsed: queued again at once.
    assert httpx.get(url, headers=auth).json()["status"] == "QUEUED", out
    # A worker started later takes it again, as its first attempt's rerun.
    proc = _slow_worker(gateway, "0.5")
    try:
        _wait_started(proc)
        assert httpx.get(url, headers=auth).json()["status"] == "IN_PROGRESS"
        # Cancelled, so that it does not wait for the next test's worker.
        cancel = httpx.put(f"{gateway.url}/{SLOW_MODEL}/requests/{request_id}/cancel", headers=auth)
        assert cancel.status_code == 202, cancel.text
        deadline = time.monotonic() + 10
        while httpx.get(url, headers=auth).json()["status"] not in ("FAILED", "CANCELED"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_an_output_the_gateway_refuses_fails_the_job_with_its_message(gateway: Gateway) -> None:
    auth = {"Authorization": f"Bearer {gateway.key}"}
    proc = _slow_worker(gateway, "0.5")
    try:
        created = httpx.post(
            f"{gateway.url}/v1/async-invoke",
            headers=auth,
            json={"model_id": SLOW_MODEL, "input": {"prompt": "no images"}},
        )
        request_id = created.json()["request_id"]
        deadline = time.monotonic() + 20
        while True:
            job = httpx.get(
                f"{gateway.url}/v1/async-invoke/{request_id}",
                headers={**auth, "Prefer": "wait=5"},
                timeout=30,
            ).json()
            if job["status"] in ("COMPLETED", "FAILED"):
                break
            assert time.monotonic() < deadline, job
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert job["status"] == "FAILED", job
    assert job["error"].startswith("invalid output: output.images"), job["error"]
