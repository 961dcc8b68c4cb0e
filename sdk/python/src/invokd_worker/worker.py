"""The worker: takes the jobs of its models from the gateway as slots free up, runs the
handler on each, heartbeats their leases, and ends each job with its output or its error."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from . import __version__
from ._http import Backoff, Gateway
from .errors import GatewayError, GatewayUnreachable, JobCancelled, JobError
from .job import Job

log = logging.getLogger("invokd_worker")

T = TypeVar("T")

#: The longest a take waits for a job (the gateway's own bound).
MAX_TAKE_WAIT_MS = 60_000
#: The most jobs one take may ask for.
MAX_TAKE_JOBS = 64
#: The most slots a worker may announce.
MAX_SLOTS = 1024


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if not value:
        return None
    return [p.strip() for p in value.replace(",", " ").split() if p.strip()]


def _env_labels(name: str) -> dict[str, str] | None:
    value = os.environ.get(name)
    if not value:
        return None
    labels = {}
    for part in value.split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            labels[k.strip()] = v.strip()
    return labels


class ConfigError(ValueError):
    """A worker's configuration that cannot run (no URL, no token, no models)."""


class Worker:
    """A worker process's loop: presence, take, heartbeats, and each job's end.

    ``handler(job)`` runs once per job and returns the output dict (or raises); a plain
    function runs on a thread of its own (``slots`` at once), an ``async def`` as a task on
    the worker's event loop. ``setup()`` (sync or async) runs once before the first take.

    Each argument left ``None`` comes from the environment:

    ========================  ==========================================================
    ``api_url``               ``INVOKD_API_URL`` (the gateway's URL)
    ``token``                 ``INVOKD_WORKER_TOKEN`` (``invw_...``)
    ``models``                ``INVOKD_WORKER_MODELS`` (comma-separated ids or ``prefix*``)
    ``name``                  ``INVOKD_WORKER_NAME`` (default: the host's name)
    ``slots``                 ``INVOKD_WORKER_SLOTS`` (default 1)
    ``labels``                ``INVOKD_WORKER_LABELS`` (``gpu=A100,region=eu``)
    ``grace_seconds``         ``INVOKD_WORKER_GRACE_SECONDS`` (default 30)
    ========================  ==========================================================

    On SIGTERM or SIGINT (or ``stop()``) it takes no more jobs, lets the running ones finish
    within ``grace_seconds``, then hands the rest back to the queue (``release``) without using
    their attempts. A second signal hands them back at once.
    """

    def __init__(
        self,
        handler: Callable[[Job], Any],
        *,
        models: Sequence[str] | None = None,
        setup: Callable[[], Any] | None = None,
        api_url: str | None = None,
        token: str | None = None,
        name: str | None = None,
        slots: int | None = None,
        labels: Mapping[str, str] | None = None,
        version: str | None = None,
        grace_seconds: float | None = None,
        take_wait_ms: int = 30_000,
        idle_heartbeat_ms: int = 30_000,
        max_tries: int = 8,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        handle_signals: bool = True,
        worker_id: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.handler = handler
        self.setup = setup
        self.api_url = api_url or os.environ.get("INVOKD_API_URL") or ""
        self.token = token or os.environ.get("INVOKD_WORKER_TOKEN") or ""
        self.models = list(models or _env_list("INVOKD_WORKER_MODELS") or [])
        self.name = name or os.environ.get("INVOKD_WORKER_NAME") or socket.gethostname()
        self.slots = int(slots or os.environ.get("INVOKD_WORKER_SLOTS") or 1)
        self.labels = dict(labels or _env_labels("INVOKD_WORKER_LABELS") or {})
        self.version = version or f"invokd-worker {__version__}"
        grace = grace_seconds
        if grace is None:
            grace = float(os.environ.get("INVOKD_WORKER_GRACE_SECONDS") or 30)
        self.grace_seconds = grace
        self.take_wait_ms = max(0, min(take_wait_ms, MAX_TAKE_WAIT_MS))
        self.idle_heartbeat_ms = idle_heartbeat_ms
        self.max_tries = max_tries
        self.backoff = Backoff(backoff_base, backoff_cap)
        self.handle_signals = handle_signals
        #: One per process: the gateway's presence key.
        self.id = worker_id or str(uuid.uuid4())
        self._transport = transport

        if not self.api_url:
            raise ConfigError("no gateway URL: pass api_url or set INVOKD_API_URL")
        if not self.token:
            raise ConfigError("no worker token: pass token or set INVOKD_WORKER_TOKEN")
        if not self.models:
            raise ConfigError("no models: pass models or set INVOKD_WORKER_MODELS")
        if not 1 <= self.slots <= MAX_SLOTS:
            raise ConfigError(f"slots must be 1 to {MAX_SLOTS}, not {self.slots}")

        #: Set once setup() has run and the worker takes jobs.
        self.ready = threading.Event()
        #: Counters: jobs completed, failed (including retried), cancelled, lost, released.
        self.stats: dict[str, int] = {
            "completed": 0,
            "failed": 0,
            "cancelled": 0,
            "lost": 0,
            "released": 0,
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gateway: Gateway | None = None
        self._held: dict[str, Job] = {}
        self._busy = 0
        self._slot_free: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._now: asyncio.Event | None = None
        self._hb_wake: asyncio.Event | None = None
        self._hb_lock: asyncio.Lock | None = None
        self._runners: set[asyncio.Task[None]] = set()
        self._fatal: BaseException | None = None
        self._stop_requested = 0

    # --- the presence -------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The ``worker`` object every take and heartbeat carries."""
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "models": self.models,
            "slots": self.slots,
            "labels": self.labels,
        }

    # --- running ------------------------------------------------------------------------

    def run(self) -> int:
        """Runs until stopped; answers the process's exit status (0 after a clean stop, 1
        when the gateway refused the worker or setup failed)."""
        return asyncio.run(self.run_async())

    async def run_async(self) -> int:
        """``run`` on the caller's event loop."""
        self._loop = asyncio.get_running_loop()
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self._now = asyncio.Event()
        self._hb_wake = asyncio.Event()
        self._hb_lock = asyncio.Lock()
        if self._stop_requested:
            self._stopping.set()
            if self._stop_requested > 1:
                self._now.set()
        installed = self._install_signals()
        self._gateway = Gateway(
            self.api_url,
            self.token,
            backoff=self.backoff,
            max_tries=self.max_tries,
            transport=self._transport,
        )
        try:
            if self.setup is not None and not await self._run_setup(self.setup):
                return 0 if self._fatal is None else 1
            log.info(
                "worker %s (%s) serving %s with %d slot(s) at %s",
                self.name,
                self.id,
                ", ".join(self.models),
                self.slots,
                self.api_url,
            )
            self.ready.set()
            heartbeats = asyncio.create_task(self._heartbeat_loop())
            taking = asyncio.create_task(self._take_loop())
            await self._stopping.wait()
            taking.cancel()
            await asyncio.gather(taking, return_exceptions=True)
            await self._drain()
            heartbeats.cancel()
            await asyncio.gather(heartbeats, return_exceptions=True)
        finally:
            for sig in installed:
                self._loop.remove_signal_handler(sig)
            await self._gateway.aclose()
        if self._fatal is not None:
            log.error("worker stopped: %s", self._fatal)
            return 1
        log.info("worker stopped: %s", self.stats)
        return 0

    async def _run_setup(self, setup: Callable[[], Any]) -> bool:
        """Runs setup (on a thread of its own when it is sync, so a signal still stops the
        worker while weights load); whether the worker goes on to take jobs."""
        assert self._stopping is not None
        done: asyncio.Future[Any]
        if _is_async(setup):
            done = asyncio.ensure_future(setup())
        else:
            done = _in_thread(lambda: setup(), "invokd-setup")
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({done, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not done.done():
            log.info("stopped during setup")
            done.cancel()
            return False
        error = done.exception()
        if error is not None:
            log.error("setup failed; the worker takes no job", exc_info=error)
            self._fatal = error
            return False
        return not self._stopping.is_set()

    def stop(self, *, now: bool = False) -> None:
        """Begins the graceful shutdown (from any thread or a signal handler): no more takes,
        running jobs finish within ``grace_seconds``, the rest are handed back. ``now=True``
        (or a second call) hands them back at once."""
        self._stop_requested += 2 if now else 1
        loop = self._loop
        if loop is None or self._stopping is None:
            return

        def flag() -> None:
            assert self._stopping is not None and self._now is not None
            if self._stopping.is_set() or now:
                self._now.set()
            self._stopping.set()

        try:
            loop.call_soon_threadsafe(flag)
        except RuntimeError:
            pass  # the loop has closed: nothing left to stop

    def _install_signals(self) -> list[int]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return []
        assert self._loop is not None
        installed: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):
                pass
        return installed

    def _on_signal(self, sig: int) -> None:
        assert self._stopping is not None
        if self._stopping.is_set():
            log.warning("%s again: handing the running jobs back now", signal.Signals(sig).name)
        else:
            log.info(
                "%s: taking no more jobs; %d running, %.0f s to finish",
                signal.Signals(sig).name,
                self._busy,
                self.grace_seconds,
            )
        self.stop()

    def _fail_worker(self, error: BaseException) -> None:
        # The gateway refused the worker itself (401, a bad take): nothing more can succeed.
        if self._fatal is None:
            self._fatal = error
        assert self._stopping is not None and self._now is not None
        self._now.set()
        self._stopping.set()

    # --- take ---------------------------------------------------------------------------

    async def _take_loop(self) -> None:
        assert self._slot_free is not None and self._gateway is not None
        failures = 0
        while True:
            free = min(self.slots - self._busy, MAX_TAKE_JOBS)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            try:
                resp = await self._gateway.call(
                    "POST",
                    "/v1/worker/take",
                    json={"worker": self.info(), "free": free, "wait_ms": self.take_wait_ms},
                    timeout=self.take_wait_ms / 1000 + 30,
                )
                failures = 0
            except GatewayError as e:
                if e.status in (429,) or e.status >= 500:
                    failures += 1
                    await asyncio.sleep(self.backoff.delay(min(failures, 10)))
                    continue
                log.error("the gateway refused take: %s", e)
                self._fail_worker(e)
                return
            except GatewayUnreachable as e:
                failures += 1
                wait = self.backoff.delay(min(failures, 10))
                log.warning("the gateway is unreachable (%s); taking again in %.1f s", e, wait)
                await asyncio.sleep(wait)
                continue
            for taken in resp.json().get("jobs") or []:
                self._start(Job(self, taken))

    def _start(self, job: Job) -> None:
        log.info("took %s (%s, attempt %d)", job.id, job.model, job.attempt)
        self._held[job.id] = job
        self._busy += 1
        assert self._hb_wake is not None
        self._hb_wake.set()
        task = asyncio.create_task(self._run(job), name=f"job {job.id}")
        job._task = task
        self._runners.add(task)
        task.add_done_callback(self._runners.discard)

    # --- one job ------------------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        is_async = _is_async(self.handler)
        handler_done: asyncio.Future[Any] | None = None
        try:
            if is_async:
                handler_done = asyncio.ensure_future(self.handler(job))
            else:
                handler = self.handler
                handler_done = _in_thread(lambda: handler(job), f"invokd-job-{job.id}")
            stopped = asyncio.ensure_future(job._cancel_async.wait())
            await asyncio.wait({handler_done, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if handler_done.done() and not job.cancelled:
                stopped.cancel()
                await self._end(job, handler_done)
            else:
                stopped.cancel()
                if is_async and not handler_done.done():
                    handler_done.cancel()
                await self._end_stopped(job)
                # The slot stays busy until the handler has let go of the job.
                await asyncio.gather(handler_done, return_exceptions=True)
        finally:
            if handler_done is not None and not handler_done.done():
                handler_done.cancel()
            self._held.pop(job.id, None)
            self._busy -= 1
            assert self._slot_free is not None
            self._slot_free.set()

    async def _end(self, job: Job, done: asyncio.Future[Any]) -> None:
        error = done.exception() if not done.cancelled() else JobCancelled("handler cancelled")
        if isinstance(error, JobCancelled) and job.cancelled:
            await self._end_stopped(job)
            return
        if error is not None:
            await self._fail(job, error)
            return
        output = done.result()
        if not isinstance(output, Mapping):
            await self._fail(
                job,
                JobError(f"the handler returned {type(output).__name__}, not the output dict"),
            )
            return
        try:
            body = json.loads(json.dumps(dict(output)))
        except (TypeError, ValueError) as e:
            await self._fail(job, JobError(f"the output is not JSON: {e}"))
            return
        await self._complete(job, body)

    async def _end_stopped(self, job: Job) -> None:
        if job._reason == "cancel":
            await self._finish_call(
                job,
                "fail",
                {"error": {"message": "cancelled", "type": "cancelled", "retry": False}},
                "cancelled",
            )
        elif job._reason == "lost":
            log.warning("dropped %s: its lease was lost", job.id)
        # "released": the shutdown has handed it back already.

    async def _complete(self, job: Job, output: dict[str, Any]) -> None:
        try:
            await self._finish_call(job, "complete", {"output": output}, "completed", raise_4xx=True)
        except GatewayError as e:
            if e.status == 422:
                # The gateway's check of the output: the job fails with what it said.
                await self._fail(job, JobError(f"invalid output: {e.message}"))
            else:
                await self._fail(job, JobError(f"complete refused: {e}"))

    async def _fail(self, job: Job, error: BaseException) -> None:
        if isinstance(error, JobError):
            err = {
                "message": error.message,
                "type": error.type or "runtime_error",
                "retry": error.retry,
            }
        else:
            message = str(error) or type(error).__name__
            err = {"message": message, "type": "runtime_error", "retry": False}
            trace = "".join(traceback.format_exception(error)).rstrip()
            job.log(trace, "error")
        log.warning("%s failed: %s%s", job.id, err["message"], " (retry)" if err["retry"] else "")
        await self._finish_call(job, "fail", {"error": err}, "failed")

    async def _finish_call(
        self,
        job: Job,
        action: str,
        body: dict[str, Any],
        counter: str,
        *,
        raise_4xx: bool = False,
    ) -> None:
        """``complete`` or ``fail`` with the job's last log lines, once: a job handed back or
        lost meanwhile is left as it is."""
        assert self._hb_lock is not None and self._gateway is not None
        # A heartbeat on its way carries earlier lines: let it land first, so lines keep order.
        async with self._hb_lock:
            if job._ended:
                return
            job._ended = True
        # Still held (heartbeats renew its lease) until the call is answered, however long
        # its retries take.
        payload = {"lease": job.lease, **body, "logs": job._take_logs()}
        try:
            resp = await self._gateway.call("POST", f"/v1/worker/jobs/{job.id}/{action}", json=payload)
        except GatewayError as e:
            if e.status == 409:
                log.warning("%s: %s refused, the lease is lost (%s)", job.id, action, e.message)
                self.stats["lost"] += 1
                return
            if raise_4xx and 400 <= e.status < 500:
                job._ended = False
                raise
            log.error("%s: %s failed: %s", job.id, action, e)
            return
        except GatewayUnreachable as e:
            log.error("%s: %s failed, the lease will lapse: %s", job.id, action, e)
            return
        status = (resp.json() or {}).get("status") if resp.content else None
        log.info("%s: %s (%s)", job.id, action, status or "ok")
        if status == "CANCELED":
            counter = "cancelled"
        self.stats[counter] += 1

    def _lost(self, job: Job) -> None:
        if not job._ended:
            self.stats["lost"] += 1
            job._ended = True
        job._stop("lost")
        self._held.pop(job.id, None)

    # --- heartbeats ---------------------------------------------------------------------

    def _heartbeat_interval(self) -> float:
        if self._held:
            return min(j.heartbeat_every_ms for j in self._held.values()) / 1000
        return self.idle_heartbeat_ms / 1000

    async def _heartbeat_loop(self) -> None:
        assert self._hb_wake is not None
        last = time.monotonic()
        while True:
            due = last + self._heartbeat_interval()
            self._hb_wake.clear()
            wait = due - time.monotonic()
            if wait > 0:
                try:
                    await asyncio.wait_for(self._hb_wake.wait(), timeout=wait)
                    continue  # a job came or went: the interval may differ now
                except asyncio.TimeoutError:
                    pass
            last = time.monotonic()
            await self._heartbeat()

    async def _heartbeat(self) -> None:
        assert self._hb_lock is not None
        async with self._hb_lock:
            sent = []
            for j in list(self._held.values()):
                entry: dict[str, Any] = {"id": j.id, "lease": j.lease}
                # A job being completed or failed keeps its lease renewed; its last lines go
                # with that call.
                logs = [] if j._ended else j._take_logs()
                progress = None if j._ended else j._take_progress()
                if logs:
                    entry["logs"] = logs
                if progress is not None:
                    entry["progress"] = progress
                sent.append((j, entry, logs, progress))
            try:
                answer = await self._beat([e for _, e, _, _ in sent])
            except GatewayError as e:
                if e.status in (400, 403, 404) and sent:
                    # One job the gateway will not renew refuses the whole heartbeat: find it
                    # by beating each job alone, and drop it, so the others keep their leases.
                    log.warning("heartbeat refused (%s): renewing the jobs one by one", e)
                    answer = await self._beat_each(sent)
                else:
                    self._beat_failed(e, sent)
                    return
            except GatewayUnreachable as e:
                self._beat_failed(e, sent)
                return
        for job_id in answer.get("cancel") or []:
            job = self._held.get(job_id)
            if job is not None and not job._ended:
                log.info("%s: cancel asked", job_id)
                job._stop("cancel")
        for job_id in answer.get("lost") or []:
            job = self._held.get(job_id)
            if job is not None and not job._ended:
                log.warning("%s: lease lost", job_id)
                self._lost(job)

    async def _beat(self, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        assert self._gateway is not None
        # Tried within one interval: a later heartbeat carries the lines anyway.
        resp = await self._gateway.call(
            "POST",
            "/v1/worker/heartbeat",
            json={"worker": self.info(), "jobs": jobs},
            max_tries=3,
        )
        answer = resp.json()
        return answer if isinstance(answer, dict) else {}

    async def _beat_each(self, sent: list[tuple[Job, dict[str, Any], Any, Any]]) -> dict[str, Any]:
        merged: dict[str, list[str]] = {"cancel": [], "lost": []}
        for job, entry, logs, progress in sent:
            try:
                answer = await self._beat([entry])
            except GatewayError as e:
                if e.status in (400, 403, 404):
                    log.warning("%s: the gateway refuses its heartbeat (%s); dropped", job.id, e)
                    merged["lost"].append(job.id)
                else:
                    self._beat_failed(e, [(job, entry, logs, progress)])
                continue
            except GatewayUnreachable as e:
                self._beat_failed(e, [(job, entry, logs, progress)])
                continue
            merged["cancel"] += answer.get("cancel") or []
            merged["lost"] += answer.get("lost") or []
        return merged

    def _beat_failed(
        self, error: Exception, sent: list[tuple[Job, dict[str, Any], Any, Any]]
    ) -> None:
        for j, _, logs, progress in sent:
            j._give_back(logs, progress)
        if isinstance(error, GatewayError) and error.status == 401:
            log.error("the gateway refused the worker's token: %s", error)
            self._fail_worker(error)
        else:
            log.warning("heartbeat failed: %s", error)

    # --- shutdown -----------------------------------------------------------------------

    async def _drain(self) -> None:
        assert self._now is not None and self._gateway is not None
        if not self._now.is_set():
            deadline = time.monotonic() + self.grace_seconds
            now = asyncio.ensure_future(self._now.wait())
            while self._runners and not now.done():
                grace_left = deadline - time.monotonic()
                if grace_left <= 0:
                    break
                await asyncio.wait(
                    set(self._runners) | {now},
                    timeout=grace_left,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            now.cancel()
        left = [j for j in list(self._held.values()) if not j._ended]
        if left:
            log.info("handing %d job(s) back to the queue", len(left))
        await asyncio.gather(*(self._release(j) for j in left))
        for job in left:
            if job._task is not None:
                job._task.cancel()
        # The others are ending their jobs (complete or fail under way): let them answer.
        finishing = set(self._runners)
        if finishing:
            await asyncio.wait(finishing, timeout=self.backoff.cap * 2)
        for task in finishing:
            task.cancel()
        await asyncio.gather(*finishing, return_exceptions=True)

    async def _release(self, job: Job) -> None:
        assert self._hb_lock is not None and self._gateway is not None
        async with self._hb_lock:
            if job._ended:
                return
            job._ended = True
        job._stop("released")
        try:
            resp = await self._gateway.call(
                "POST", f"/v1/worker/jobs/{job.id}/release", json={"lease": job.lease}, max_tries=3
            )
            log.info("%s: released (%s)", job.id, resp.json().get("status"))
            self.stats["released"] += 1
        except (GatewayError, GatewayUnreachable) as e:
            log.warning("%s: release failed, the lease will lapse: %s", job.id, e)

    # --- bridges for sync handlers ------------------------------------------------------

    def _gateway_now(self) -> Gateway:
        assert self._gateway is not None
        return self._gateway

    def _call_from_thread(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        assert loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coro.close()
            raise RuntimeError(
                "a blocking job call from the worker's event loop: in an async handler, "
                "await job.asave_file(...) / job.apartial(...)"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result()


def _is_async(handler: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)
    )


def _in_thread(fn: Callable[[], T], name: str) -> asyncio.Future[T]:
    """Runs a sync handler (or setup) on a daemon thread of its own: one that never returns
    cannot keep the process from exiting after its job was handed back."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def body() -> None:
        try:
            result = fn()
        except BaseException as e:  # noqa: BLE001 - every failure ends the job
            try:
                loop.call_soon_threadsafe(settle, False, e)
            except RuntimeError:
                pass
            return
        try:
            loop.call_soon_threadsafe(settle, True, result)
        except RuntimeError:
            pass

    threading.Thread(target=body, name=name, daemon=True).start()
    return fut


def start(
    handler: Callable[[Job], Any] | Mapping[str, Any] | Any,
    **options: Any,
) -> None:
    """Runs a worker until it is stopped, then exits the process with its status.

    In the spirit of RunPod's ``serverless.start``: ``start({"handler": fn, "setup": setup,
    "models": [...]})``, or ``start(fn, models=[...])``, or with an object in the manner of a
    Cog predictor, with ``setup()`` and ``predict(job)``: ``start(Predictor(), models=[...])``.
    Every other keyword is one of ``Worker``'s; the rest come from the environment.
    """
    if isinstance(handler, Mapping):
        options = {**{k: v for k, v in handler.items() if k != "handler"}, **options}
        fn = handler["handler"]
    elif hasattr(handler, "predict") and callable(handler.predict):
        options.setdefault("setup", getattr(handler, "setup", None))
        fn = handler.predict
    else:
        fn = handler
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        # httpx logs every request at INFO: a worker's heartbeats would drown its own lines.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    raise SystemExit(Worker(fn, **options).run())

