"""One job a worker runs: its input, and the calls a handler makes about it (logs, progress,
files, partial outputs, cancel)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _media
from .errors import GatewayError, JobCancelled

if TYPE_CHECKING:
    from .worker import Worker

LEASE_HEADER = "X-Invokd-Lease"
_CHUNK = 1 << 20

# The gateway's log levels (fal's): anything else is sent as INFO.
_LEVELS = {
    "info": "INFO",
    "warn": "WARN",
    "warning": "WARN",
    "error": "ERROR",
    "debug": "DEBUG",
    "stdout": "STDOUT",
    "stderr": "STDERR",
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Job:
    """A job the worker took: what the handler gets.

    Its ``input`` is prepared by the gateway (defaults applied, validated against the model's
    schema). The handler returns the output (a dict in the model's output shape) or raises.

    Every method may be called from a sync handler's thread; ``asave_file`` and ``apartial``
    are the forms an async handler awaits. ``log`` and ``progress`` never block: they are sent
    with the next heartbeat.
    """

    def __init__(self, worker: Worker, taken: dict[str, Any]) -> None:
        self._worker = worker
        self.id: str = taken["id"]
        self.model: str = taken["model"]
        self.input: dict[str, Any] = taken.get("input") or {}
        self.attempt: int = int(taken.get("attempt", 1))
        #: The model's kind: ``image``, ``audio`` or ``speech``.
        self.kind: str | None = taken.get("kind")
        #: The model's output section of the gateway's catalog: what the result must look like.
        self.output_spec: dict[str, Any] = taken.get("output") or {}
        self.lease: str = taken["lease"]
        self.lease_expires_at: str | None = taken.get("lease_expires_at")
        # The gateway's own rhythm, a third of the lease (never below 50 ms here).
        self.heartbeat_every_ms: int = max(50, int(taken.get("heartbeat_every_ms") or 10_000))
        files = taken.get("files") or {}
        self._upload_url: str = files.get("upload_url") or f"/v1/worker/jobs/{self.id}/files"
        self._presign: bool = bool(files.get("presign"))
        self._max_bytes: int | None = files.get("max_bytes")

        self._lock = threading.Lock()
        self._logs: list[dict[str, Any]] = []
        self._progress: dict[str, Any] | None = None
        self._progress_sent = True
        self._files = 0
        self._cancel = threading.Event()
        self._cancel_async = asyncio.Event()
        self._reason: str | None = None  # "cancel" or "lost"
        self._ended = False
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, model={self.model!r}, attempt={self.attempt})"

    # --- cancel -------------------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        """True once the gateway asked to cancel the job, its lease was lost, or the worker is
        shutting down and hands the job back: stop soon, whatever is returned is dropped."""
        return self._cancel.is_set()

    @property
    def cancel_event(self) -> threading.Event:
        """Set when ``cancelled`` turns true: ``job.cancel_event.wait(timeout)`` in a thread."""
        return self._cancel

    async def wait_cancelled(self) -> None:
        """Returns when ``cancelled`` turns true (for async handlers)."""
        await self._cancel_async.wait()

    def raise_if_cancelled(self) -> None:
        """Raises ``JobCancelled`` once the job was cancelled, lost or handed back."""
        if self.cancelled:
            raise JobCancelled(f"job {self.id} {self._reason or 'cancelled'}")

    def _stop(self, reason: str) -> None:
        # On the worker's loop.
        if self._reason is None:
            self._reason = reason
        self._cancel.set()
        self._cancel_async.set()

    # --- logs and progress --------------------------------------------------------------

    def log(self, message: str, level: str = "info") -> None:
        """A log line for the job's readers (fal's ``logs``, SSE), sent with the next heartbeat.

        ``level``: ``info`` (the default), ``warn``, ``error``, ``debug``, ``stdout`` or
        ``stderr``.
        """
        line = {
            "message": str(message),
            "level": _LEVELS.get(level.lower(), "INFO"),
            "timestamp": _now(),
        }
        with self._lock:
            self._logs.append(line)

    def progress(self, step: int, total: int | None = None, message: str | None = None) -> None:
        """How far the run has come; the latest reaches the job's readers with the next
        heartbeat (the CLI's live line, SSE events)."""
        p: dict[str, Any] = {"step": int(step)}
        if total is not None:
            p["total"] = int(total)
        if message is not None:
            p["message"] = str(message)
        with self._lock:
            self._progress = p
            self._progress_sent = False

    def _take_logs(self) -> list[dict[str, Any]]:
        with self._lock:
            logs, self._logs = self._logs, []
        return logs

    def _take_progress(self) -> dict[str, Any] | None:
        with self._lock:
            if self._progress_sent:
                return None
            self._progress_sent = True
            return self._progress

    def _give_back(self, logs: list[dict[str, Any]], progress: dict[str, Any] | None) -> None:
        # A heartbeat that failed: its lines go out with the next one, still first.
        with self._lock:
            self._logs[:0] = logs
            if progress is not None and self._progress_sent:
                self._progress_sent = False

    # --- files --------------------------------------------------------------------------

    def save_file(
        self,
        data: bytes | str | os.PathLike[str],
        name: str | None = None,
        content_type: str | None = None,
        *,
        width: int | None = None,
        height: int | None = None,
    ) -> dict[str, Any]:
        """Stores an output file through the gateway; answers the file's object for the output.

        ``data`` is the file's bytes or its path. ``name`` defaults to the path's name (for
        bytes, ``output-N`` with the content type's extension); ``content_type`` to the one
        the name or the bytes show. The answer is the gateway's
        ``{"url": "blob:...", "file_name", "content_type", "file_size"}``, plus ``width`` and
        ``height`` for an image (read from its header unless given), which an image model's
        output must name::

            return {"images": [job.save_file(png_bytes, "city.png")], ...}

        Blocks until stored; from an async handler, ``await job.asave_file(...)``.
        """
        return self._worker._call_from_thread(
            self.asave_file(data, name, content_type, width=width, height=height)
        )

    async def asave_file(
        self,
        data: bytes | str | os.PathLike[str],
        name: str | None = None,
        content_type: str | None = None,
        *,
        width: int | None = None,
        height: int | None = None,
    ) -> dict[str, Any]:
        """``save_file`` for async handlers."""
        self.raise_if_cancelled()
        path: Path | None = None
        blob: bytes | None = None
        if isinstance(data, (bytes, bytearray, memoryview)):
            blob = bytes(data)
            size = len(blob)
            head = blob[: 64 * 1024]
        else:
            path = Path(data)
            size = path.stat().st_size
            with path.open("rb") as f:
                head = f.read(64 * 1024)
            name = name or path.name
        if self._max_bytes is not None and size > self._max_bytes:
            raise ValueError(
                f"file {name or ''} is {size} bytes, over the gateway's limit of "
                f"{self._max_bytes}"
            )
        ctype = content_type or _media.content_type_for(name, head)
        with self._lock:
            self._files += 1
            n = self._files
        file_name = _media.safe_name(name or f"output-{n}", ctype)

        if ctype.startswith("image/") and (width is None or height is None):
            # A JPEG's frame header may sit past the first bytes (EXIF): then read it all.
            dims = _media.image_size(head)
            if dims is None and size > len(head):
                whole = blob if blob is not None else path.read_bytes() if path else b""
                dims = _media.image_size(whole)
            if dims:
                width = width if width is not None else dims[0]
                height = height if height is not None else dims[1]

        def body() -> bytes | AsyncIterator[bytes]:
            if blob is not None:
                return blob
            assert path is not None
            return _read_chunks(path)

        headers = {"Content-Type": ctype, "Content-Length": str(size), LEASE_HEADER: self.lease}
        gw = self._worker._gateway_now()
        target = f"{self._upload_url}/{file_name}"
        try:
            if self._presign:
                resp = await gw.call(
                    "POST",
                    f"{target}/presign",
                    json={"lease": self.lease, "content_type": ctype},
                )
                signed = resp.json()
                put_headers = {"Content-Type": ctype, "Content-Length": str(size)}
                put_headers.update(signed.get("headers") or {})
                await gw.call("PUT", signed["put_url"], content=body, headers=put_headers, auth=False)
                stored = {
                    "url": signed["url"],
                    "file_name": file_name,
                    "content_type": ctype,
                    "file_size": size,
                }
            else:
                resp = await gw.call("PUT", target, content=body, headers=headers)
                stored = resp.json()
        except GatewayError as e:
            if e.status == 409:
                self._worker._lost(self)
                raise JobCancelled(f"job {self.id}: lease lost ({e.message})") from e
            raise
        if width is not None and height is not None:
            stored["width"] = int(width)
            stored["height"] = int(height)
        return stored

    # --- partial outputs ----------------------------------------------------------------

    def partial(self, output: dict[str, Any]) -> None:
        """Sends an intermediate result in the model's output shape (a preview image stored
        with ``save_file``, a partial transcript) to the job's SSE readers.

        Blocks until sent; from an async handler, ``await job.apartial(...)``.
        """
        self._worker._call_from_thread(self.apartial(output))

    async def apartial(self, output: dict[str, Any]) -> None:
        """``partial`` for async handlers."""
        self.raise_if_cancelled()
        try:
            await self._worker._gateway_now().call(
                "POST",
                f"/v1/worker/jobs/{self.id}/partial",
                json={"lease": self.lease, "output": output},
            )
        except GatewayError as e:
            if e.status == 409:
                self._worker._lost(self)
                raise JobCancelled(f"job {self.id}: lease lost ({e.message})") from e
            raise


async def _read_chunks(path: Path) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(f.read, _CHUNK):
            yield chunk
    finally:
        f.close()

