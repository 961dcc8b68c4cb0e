"""The SDK against the fake gateway: the protocol's happy path and its edge cases."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
from typing import Any

import pytest
from PIL import Image

from conftest import Running
from fake_gateway import TOKEN, FakeGateway
from invokd_worker import ConfigError, Job, JobError, RetryableError, Worker


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def test_sync_handler_completes_with_a_file_logs_and_progress(gateway: FakeGateway, start_worker) -> None:
    seen: dict[str, Any] = {}

    def handler(job: Job) -> dict[str, Any]:
        seen.update(id=job.id, model=job.model, attempt=job.attempt, thread=threading.current_thread().name)
        job.log("starting")
        job.progress(1, 2, message="drawing")
        image = job.save_file(png(64, 48), "city.png")
        job.partial({"images": [image]})
        job.progress(2, 2)
        job.log("careful", level="warning")
        time.sleep(0.25)  # a heartbeat or two carries the lines and the progress
        return {"images": [image], "seed": 7, "prompt": job.input["prompt"]}

    running = start_worker(handler, slots=2, labels={"gpu": "none"})
    job_id = gateway.submit({"prompt": "a city"})
    job = gateway.wait_status(job_id, "COMPLETED")

    assert seen["id"] == job_id and seen["model"] == "acme/painter" and seen["attempt"] == 1
    assert seen["thread"].startswith("invokd-job-")
    image = job.output["images"][0]
    assert image == {
        "url": f"blob:{job_id}/city.png",
        "file_name": "city.png",
        "content_type": "image/png",
        "file_size": len(job.files["city.png"][1]),
        "width": 64,
        "height": 48,
    }
    assert Image.open(io.BytesIO(job.files["city.png"][1])).size == (64, 48)
    assert job.partials == [{"images": [image]}]
    assert [(l["message"], l["level"]) for l in job.logs] == [("starting", "INFO"), ("careful", "WARN")]
    # The latest progress at each heartbeat: the last one is the handler's last.
    assert job.progress[-1] == {"step": 2, "total": 2}
    assert all(p in ({"step": 1, "total": 2, "message": "drawing"}, {"step": 2, "total": 2}) for p in job.progress)
    # Presence: every take and heartbeat names the worker.
    info = gateway.workers[running.worker.id]
    assert info == {
        "id": running.worker.id,
        "name": "test-worker",
        "version": "invokd-worker 0.1.0",
        "models": ["acme/*"],
        "slots": 2,
        "labels": {"gpu": "none"},
    }
    assert running.stop() == 0
    assert running.worker.stats["completed"] == 1


def test_files_go_straight_to_the_bucket_where_the_gateway_presigns(gateway: FakeGateway, start_worker, tmp_path) -> None:
    gateway.presign = True
    picture = tmp_path / "big picture.png"
    picture.write_bytes(png(30, 20))

    def handler(job: Job) -> dict[str, Any]:
        return {"images": [job.save_file(picture)], "audio": job.save_file(b"RIFF\0\0\0\0WAVEfmt ")}

    start_worker(handler)
    job_id = gateway.submit({"prompt": "p"})
    job = gateway.wait_status(job_id, "COMPLETED")
    assert job.output["images"] == [
        {
            "url": f"blob:{job_id}/big_picture.png",
            "file_name": "big_picture.png",
            "content_type": "image/png",
            "file_size": picture.stat().st_size,
            "width": 30,
            "height": 20,
        }
    ]
    assert job.output["audio"]["file_name"] == "output-2.wav"
    assert job.output["audio"]["content_type"] == "audio/wav"
    assert job.files["big_picture.png"] == ("image/png", picture.read_bytes())
    assert [s for _, s in gateway.calls("bucket")] == [200, 200]
    assert [s for _, s in gateway.calls("files")] == []


def test_a_file_over_the_limit_fails_the_job_before_any_upload(gateway: FakeGateway, start_worker) -> None:
    gateway.max_bytes = 1000
    start_worker(lambda job: {"images": [job.save_file(b"x" * 1001, "big.bin")]})
    job = gateway.wait_status(gateway.submit({"prompt": "p"}), "FAILED")
    assert job.error["message"] == "file big.bin is 1001 bytes, over the gateway's limit of 1000"
    assert gateway.calls("files") == []


def test_async_handlers_run_as_many_at_once_as_slots(gateway: FakeGateway, start_worker) -> None:
    lock = threading.Lock()
    now = {"running": 0, "most": 0}

    async def handler(job: Job) -> dict[str, Any]:
        with lock:
            now["running"] += 1
            now["most"] = max(now["most"], now["running"])
        await asyncio.sleep(0.3)
        image = await job.asave_file(png(8, 8), content_type="image/png")
        with lock:
            now["running"] -= 1
        return {"images": [image], "seed": 1, "prompt": job.input["prompt"]}

    running = start_worker(handler, slots=3)
    ids = [gateway.submit({"prompt": f"p{i}"}) for i in range(7)]
    for job_id in ids:
        job = gateway.wait_status(job_id, "COMPLETED")
        assert job.output["images"][0]["file_name"] == "output-1.png"
    assert now["most"] == 3
    # No take asked for more jobs than free slots, nor for none.
    assert all(1 <= b["free"] <= 3 for b in gateway.bodies["take"])
    assert running.stop() == 0


def test_blocking_calls_from_an_async_handler_are_refused_clearly(gateway: FakeGateway, start_worker) -> None:
    async def handler(job: Job) -> dict[str, Any]:
        job.save_file(b"x", "x.txt")
        return {}

    start_worker(handler)
    job = gateway.wait_status(gateway.submit({"prompt": "p"}), "FAILED")
    assert "await job.asave_file" in job.error["message"]


def test_503_and_429_are_retried_with_growing_delays(gateway: FakeGateway, start_worker) -> None:
    gateway.fault("take", 503, 503, 429)
    gateway.fault("complete", 503, 502)
    gateway.fault("files", 500)
    running = start_worker(
        lambda job: {"images": [job.save_file(png(4, 4), "a.png")]},
        backoff_base=0.05,
        backoff_cap=1.0,
    )
    job_id = gateway.submit({"prompt": "p"})
    job = gateway.wait_status(job_id, "COMPLETED")
    assert job.ends == ["complete"]
    takes = gateway.calls("take")
    assert [s for _, s in takes[:4]] == [503, 503, 429, 200]
    gaps = [b[0] - a[0] for a, b in zip(takes, takes[1:4])]
    # base * 2**n, each drawn from its upper half: 0.025-0.05, 0.05-0.1, 0.1-0.2 (a busy
    # machine only makes them longer; the exact draws are test_media's backoff test).
    assert gaps[0] >= 0.025 and gaps[1] >= 0.05 and gaps[2] >= 0.1, gaps
    assert max(gaps) < 1.0, gaps
    assert [s for _, s in gateway.calls("complete")] == [503, 502, 200]
    assert [s for _, s in gateway.calls("files")] == [500, 201]
    running.stop()


def test_other_4xx_are_not_retried_and_422_on_complete_fails_the_job(gateway: FakeGateway, start_worker) -> None:
    gateway.output_check = lambda job, output: None if "images" in output else "output.images: missing"
    start_worker(lambda job: {"seed": 1})
    job = gateway.wait_status(gateway.submit({"prompt": "p"}), "FAILED")
    assert [s for _, s in gateway.calls("complete")] == [422]
    assert job.error == {
        "message": "invalid output: output.images: missing",
        "type": "runtime_error",
        "retry": False,
    }


def test_an_exception_fails_the_job_with_its_message_and_trace(gateway: FakeGateway, start_worker) -> None:
    def handler(job: Job) -> dict[str, Any]:
        raise ValueError("prompt too long")

    start_worker(handler)
    job = gateway.wait_status(gateway.submit({"prompt": "p"}), "FAILED")
    assert job.error == {"message": "prompt too long", "type": "runtime_error", "retry": False}
    assert job.logs[-1]["level"] == "ERROR" and "ValueError: prompt too long" in job.logs[-1]["message"]


def test_retryable_error_asks_for_another_attempt(gateway: FakeGateway, start_worker) -> None:
    attempts = []

    def handler(job: Job) -> dict[str, Any]:
        attempts.append(job.attempt)
        if job.attempt == 1:
            raise RetryableError("GPU busy")
        if job.attempt == 2:
            raise JobError("bad seed", type="validation_error")
        return {}

    start_worker(handler)
    job_id = gateway.submit({"prompt": "p"})
    job = gateway.wait_status(job_id, "FAILED")
    assert attempts == [1, 2]
    assert job.ends == ["fail", "fail"]
    assert gateway.bodies["fail"][0]["error"] == {"message": "GPU busy", "type": "runtime_error", "retry": True}
    assert job.error == {"message": "bad seed", "type": "validation_error", "retry": False}


def test_a_non_dict_output_fails_the_job(gateway: FakeGateway, start_worker) -> None:
    start_worker(lambda job: ["not", "a", "dict"])
    job = gateway.wait_status(gateway.submit({"prompt": "p"}), "FAILED")
    assert job.error["message"] == "the handler returned list, not the output dict"


def test_cancel_from_a_heartbeat_stops_the_job_and_ends_it_cancelled(gateway: FakeGateway, start_worker) -> None:
    started = threading.Event()
    saw_cancel = threading.Event()

    def handler(job: Job) -> dict[str, Any]:
        started.set()
        assert job.cancel_event.wait(10)
        assert job.cancelled
        saw_cancel.set()
        return {"images": []}

    running = start_worker(handler)
    job_id = gateway.submit({"prompt": "p"})
    assert started.wait(5)
    asked = time.monotonic()
    gateway.cancel(job_id)
    job = gateway.wait_status(job_id, "CANCELED")
    # Within about one heartbeat (100 ms here; a busy machine may add some).
    assert time.monotonic() - asked < 2.0
    assert saw_cancel.wait(5)
    assert job.ends == ["fail"] and job.output is None
    assert gateway.calls("complete") == []
    running.stop()
    assert running.worker.stats["cancelled"] == 1


def test_cancel_reaches_an_async_handler_as_cancellation(gateway: FakeGateway, start_worker) -> None:
    state: dict[str, Any] = {}

    async def handler(job: Job) -> dict[str, Any]:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            state["cancelled"] = job.cancelled
            raise
        return {}

    start_worker(handler)
    job_id = gateway.submit({"prompt": "p"})
    gateway.wait_for(lambda: gateway.jobs[job_id].status == "IN_PROGRESS")
    gateway.cancel(job_id)
    gateway.wait_status(job_id, "CANCELED")
    gateway.wait_for(lambda: "cancelled" in state)
    assert state["cancelled"] is True


def test_a_lost_lease_drops_the_job_without_ending_it(gateway: FakeGateway, start_worker) -> None:
    gateway.max_attempts = 1
    started = threading.Event()
    stopped = threading.Event()

    def handler(job: Job) -> dict[str, Any]:
        if job.attempt == 1:
            started.set()
            job.cancel_event.wait(10)
            stopped.set()
            return {"images": []}
        return {"seed": job.attempt}

    running = start_worker(handler)
    job_id = gateway.submit({"prompt": "p"})
    assert started.wait(5)
    gateway.take_back(job_id)  # the janitor took it back: the next heartbeat says lost
    assert stopped.wait(5)
    # The worker takes it again as attempt 2 and completes that one; attempt 1 sent nothing.
    job = gateway.wait_status(job_id, "COMPLETED")
    assert job.output == {"seed": 2}
    assert job.ends == ["complete"]
    assert gateway.calls("fail") == []
    assert running.worker.stats["lost"] == 1


def test_409_on_complete_drops_the_job(gateway: FakeGateway, start_worker) -> None:
    release = threading.Event()

    def handler(job: Job) -> dict[str, Any]:
        release.wait(5)
        return {"seed": 1}

    running = start_worker(handler, idle_heartbeat_ms=60_000)
    gateway.heartbeat_every_ms = 60_000  # no heartbeat tells the worker first
    job_id = gateway.submit({"prompt": "p"})
    gateway.wait_for(lambda: gateway.jobs[job_id].status == "IN_PROGRESS")
    with gateway.cond:
        gateway.jobs[job_id].lease = "someone-else"
    release.set()
    gateway.wait_for(lambda: len(gateway.calls("complete")) == 1)
    time.sleep(0.2)
    assert [s for _, s in gateway.calls("complete")] == [409]
    assert gateway.calls("fail") == []
    assert running.worker.stats["lost"] == 1


def test_stop_lets_running_jobs_finish_within_the_grace_and_releases_the_rest(gateway: FakeGateway, start_worker) -> None:
    started = threading.Semaphore(0)

    def handler(job: Job) -> dict[str, Any]:
        started.release()
        if job.input["prompt"] == "quick":
            time.sleep(0.3)
            return {"seed": 1}
        job.cancel_event.wait(30)
        return {"seed": 2}

    running = start_worker(handler, slots=2, grace_seconds=1.0)
    quick = gateway.submit({"prompt": "quick"})
    slow = gateway.submit({"prompt": "slow"})
    assert started.acquire(timeout=5) and started.acquire(timeout=5)
    stopped_at = time.monotonic()
    assert running.stop() == 0
    took = time.monotonic() - stopped_at
    assert 0.9 <= took < 5, took
    assert gateway.jobs[quick].status == "COMPLETED"
    slow_job = gateway.jobs[slow]
    assert slow_job.status == "QUEUED" and slow_job.ends == ["release"] and slow_job.attempt == 1
    # No take after the stop.
    assert running.worker.stats == {"completed": 1, "failed": 0, "cancelled": 0, "lost": 0, "released": 1}


def test_401_stops_the_worker_with_an_error(gateway: FakeGateway) -> None:
    worker = Worker(
        lambda job: {},
        api_url=gateway.url,
        token="invw_revoked",
        models=["acme/*"],
        take_wait_ms=100,
        handle_signals=False,
    )
    assert worker.run() == 1
    assert [s for _, s in gateway.calls("take")] == [401]


def test_setup_runs_once_before_the_first_take_and_a_failed_setup_exits(gateway: FakeGateway, start_worker) -> None:
    calls = []

    def setup() -> None:
        calls.append(len(gateway.calls("take")))

    running = start_worker(lambda job: {"seed": 0}, setup=setup)
    gateway.wait_status(gateway.submit({"prompt": "p"}), "COMPLETED")
    gateway.wait_status(gateway.submit({"prompt": "q"}), "COMPLETED")
    assert calls == [0]
    running.stop()

    def broken() -> None:
        raise RuntimeError("no weights")

    w = Worker(lambda job: {}, setup=broken, api_url=gateway.url, token=TOKEN, models=["m"], handle_signals=False)
    assert w.run() == 1


def test_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVOKD_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("INVOKD_WORKER_TOKEN", "invw_x")
    monkeypatch.setenv("INVOKD_WORKER_MODELS", "acme/*, fal-ai/flux/schnell")
    monkeypatch.setenv("INVOKD_WORKER_SLOTS", "4")
    monkeypatch.setenv("INVOKD_WORKER_LABELS", "gpu=A100,region=eu")
    monkeypatch.setenv("INVOKD_WORKER_NAME", "box-1")
    w = Worker(lambda job: {})
    assert (w.api_url, w.token, w.models, w.slots, w.labels, w.name) == (
        "http://127.0.0.1:9",
        "invw_x",
        ["acme/*", "fal-ai/flux/schnell"],
        4,
        {"gpu": "A100", "region": "eu"},
        "box-1",
    )
    # Arguments win over the environment.
    assert Worker(lambda job: {}, slots=2, models=["m"]).slots == 2
    monkeypatch.delenv("INVOKD_WORKER_TOKEN")
    with pytest.raises(ConfigError, match="INVOKD_WORKER_TOKEN"):
        Worker(lambda job: {})
    # One id per process (per Worker), a valid presence key.
    a, b = Worker(lambda job: {}, token="t"), Worker(lambda job: {}, token="t")
    assert a.id != b.id and len(a.id) == 36


def test_network_errors_are_retried_until_the_gateway_answers() -> None:
    # A gateway that is not there yet: the worker keeps trying, then works once it is.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    worker = Worker(
        lambda job: {"seed": 3},
        api_url=f"http://127.0.0.1:{port}",
        token=TOKEN,
        models=["acme/*"],
        take_wait_ms=100,
        backoff_base=0.01,
        backoff_cap=0.05,
        handle_signals=False,
    )
    running = Running(worker)
    time.sleep(0.3)
    with FakeGateway(port=port) as late:
        job = late.wait_status(late.submit({"prompt": "p"}), "COMPLETED")
        assert job.output == {"seed": 3}
        assert running.stop() == 0


def test_a_shutdown_lets_a_complete_under_way_answer(gateway: FakeGateway, start_worker) -> None:
    gateway.fault("complete", 503, 503)
    running = start_worker(lambda job: {"seed": 9}, backoff_base=0.2, backoff_cap=0.4)
    job_id = gateway.submit({"prompt": "p"})
    gateway.wait_for(lambda: len(gateway.calls("complete")) == 1)
    assert running.stop(now=True) == 0
    assert gateway.jobs[job_id].status == "COMPLETED"
    assert gateway.jobs[job_id].ends == ["complete"]
    assert gateway.calls("release") == []


def test_heartbeats_renew_a_job_while_its_complete_is_retried(gateway: FakeGateway, start_worker) -> None:
    gateway.fault("complete", 503, 503, 503)
    start_worker(lambda job: {"seed": 9}, backoff_base=0.2, backoff_cap=0.4)
    job_id = gateway.submit({"prompt": "p"})
    gateway.wait_for(lambda: len(gateway.calls("complete")) == 1)
    first = len(gateway.bodies["heartbeat"])
    gateway.wait_status(job_id, "COMPLETED")
    renewals = [
        b for b in gateway.bodies["heartbeat"][first:] if any(j["id"] == job_id for j in b["jobs"])
    ]
    assert renewals, "no heartbeat renewed the lease during the retries"


def test_a_job_whose_heartbeat_is_refused_is_dropped_and_the_others_keep_their_leases(
    gateway: FakeGateway, start_worker
) -> None:
    started = threading.Semaphore(0)
    go = threading.Event()

    def handler(job: Job) -> dict[str, Any]:
        started.release()
        if job.input["prompt"] == "refused":
            assert job.cancel_event.wait(10)
            return {"seed": 0}
        go.wait(10)
        job.log("still here")
        return {"seed": 1}

    running = start_worker(handler, slots=2)
    refused = gateway.submit({"prompt": "refused"})
    fine = gateway.submit({"prompt": "fine"})
    assert started.acquire(timeout=5) and started.acquire(timeout=5)
    gateway.refuse_beats.add(refused)
    n = len(gateway.bodies["heartbeat"])
    gateway.wait_for(lambda: len(gateway.bodies["heartbeat"]) > n + 4)
    go.set()
    job = gateway.wait_status(fine, "COMPLETED")
    assert [l["message"] for l in job.logs] == ["still here"]
    assert gateway.jobs[refused].ends == []  # dropped, never ended by this worker
    assert running.worker.stats["lost"] == 1
    # After it was found, the heartbeats name only the jobs the gateway renews.
    last = gateway.bodies["heartbeat"][-1]
    assert refused not in [j["id"] for j in last["jobs"]]


def test_a_stop_during_a_long_setup_exits_without_taking(gateway: FakeGateway) -> None:
    loading = threading.Event()

    def setup() -> None:
        loading.set()
        time.sleep(30)  # weights that take long to load

    worker = Worker(
        lambda job: {}, setup=setup, api_url=gateway.url, token=TOKEN, models=["m"], handle_signals=False
    )
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker.run()), daemon=True)
    thread.start()
    assert loading.wait(5)
    worker.stop()
    thread.join(5)
    assert codes == [0] and not worker.ready.is_set()
    assert gateway.calls("take") == []


def test_an_async_setup_runs_before_the_first_take(gateway: FakeGateway, start_worker) -> None:
    order: list[str] = []

    async def setup() -> None:
        await asyncio.sleep(0.05)
        order.append(f"setup after {len(gateway.calls('take'))} takes")

    running = start_worker(lambda job: {"seed": 0}, setup=setup)
    gateway.wait_status(gateway.submit({"prompt": "p"}), "COMPLETED")
    assert order == ["setup after 0 takes"]
    running.stop()
