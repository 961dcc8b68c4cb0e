from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fake_gateway import TOKEN, FakeGateway
from invokd_worker import Worker


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    with FakeGateway() as gw:
        yield gw


class Running:
    """A worker run on a thread of the test, stopped (and joined) at the test's end."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert worker.ready.wait(10), "the worker did not start"

    def _run(self) -> None:
        self.exit_code = self.worker.run()

    def stop(self, *, now: bool = False, timeout: float = 10.0) -> int | None:
        self.worker.stop(now=now)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"
        return self.exit_code


@pytest.fixture
def start_worker(gateway: FakeGateway) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(handler: Callable[..., Any], **options: Any) -> Running:
        settings: dict[str, Any] = dict(
            api_url=gateway.url,
            token=TOKEN,
            models=["acme/*"],
            name="test-worker",
            take_wait_ms=200,
            idle_heartbeat_ms=200,
            backoff_base=0.01,
            backoff_cap=0.05,
            grace_seconds=2,
            handle_signals=False,
        )
        settings.update(options)
        running = Running(Worker(handler, **settings))
        started.append(running)
        return running

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop(now=True)
