"""A small fake of the gateway's worker endpoints (docs/workers.md), for the SDK's tests.

It keeps a queue of jobs, leases them on take, and checks each body's fields as strictly as
the gateway's own types do (unknown fields are a 422). Tests script its faults: a status to
answer the next calls of an endpoint with, a cancel to ask, a lease to take back.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

TOKEN = "invw_test_token"

WORKER_FIELDS = {"id", "name", "version", "models", "slots", "labels"}
LOG_FIELDS = {"message", "level", "timestamp"}
BODY_FIELDS = {
    "take": ({"worker", "free"}, {"wait_ms"}),
    "heartbeat": ({"worker"}, {"jobs"}),
    "complete": ({"lease", "output"}, {"logs"}),
    "fail": ({"lease", "error"}, {"logs"}),
    "release": ({"lease"}, set()),
    "partial": ({"lease", "output"}, set()),
    "presign": ({"lease", "content_type"}, set()),
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A worker that hung up on a long poll (it was stopping) is no error of the fake's.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class FakeJob:
    id: str
    model: str
    input: dict[str, Any]
    attempt: int = 1
    lease: str | None = None
    status: str = "QUEUED"
    cancel_asked: bool = False
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    progress: list[dict[str, Any]] = field(default_factory=list)
    partials: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    ends: list[str] = field(default_factory=list)


class FakeGateway:
    """The fake, serving on 127.0.0.1 on a free port (``url``)."""

    def __init__(self, *, heartbeat_every_ms: int = 100, max_attempts: int = 3, port: int = 0) -> None:
        self.heartbeat_every_ms = heartbeat_every_ms
        self.max_attempts = max_attempts
        self.jobs: dict[str, FakeJob] = {}
        self.queue: list[str] = []
        self.requests: list[tuple[float, str, str, int]] = []  # (time, method, path, status)
        self.bodies: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.workers: dict[str, dict[str, Any]] = {}
        self.faults: dict[str, list[int]] = defaultdict(list)
        self.output_check: Callable[[FakeJob, dict[str, Any]], str | None] | None = None
        self.presign = False
        #: Jobs whose heartbeat the gateway refuses (403), with the whole heartbeat that names them.
        self.refuse_beats: set[str] = set()
        self.max_bytes = 10 * 1024 * 1024
        self.cond = threading.Condition()
        self.server = _Server(("127.0.0.1", port), self._handler_class())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> "FakeGateway":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- what tests do ------------------------------------------------------------------

    def submit(self, input: dict[str, Any], model: str = "acme/painter") -> str:
        job_id = str(uuid.uuid4())
        with self.cond:
            self.jobs[job_id] = FakeJob(job_id, model, input)
            self.queue.append(job_id)
            self.cond.notify_all()
        return job_id

    def fault(self, endpoint: str, *statuses: int) -> None:
        """The next calls of ``endpoint`` (take, heartbeat, files, complete, ...) answer these
        statuses before any is served."""
        with self.cond:
            self.faults[endpoint].extend(statuses)

    def cancel(self, job_id: str) -> None:
        with self.cond:
            job = self.jobs[job_id]
            job.cancel_asked = True
            if job.status == "QUEUED":
                job.status = "CANCELED"
                self.queue.remove(job_id)
            self.cond.notify_all()

    def take_back(self, job_id: str) -> None:
        """The lease lapses: the job goes back to the queue under a new attempt."""
        with self.cond:
            job = self.jobs[job_id]
            job.lease = None
            job.attempt += 1
            job.status = "QUEUED"
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting on the fake gateway")
                self.cond.wait(left)

    def wait_status(self, job_id: str, *statuses: str, timeout: float = 10.0) -> FakeJob:
        self.wait_for(lambda: self.jobs[job_id].status in statuses, timeout)
        return self.jobs[job_id]

    def calls(self, endpoint: str) -> list[tuple[float, int]]:
        """(time, status) of each call to an endpoint, in order."""
        return [(t, s) for (t, _, p, s) in self.requests if _endpoint(p) == endpoint]

    # --- the endpoints ------------------------------------------------------------------

    def _check(self, endpoint: str, body: Any) -> None:
        if not isinstance(body, dict):
            raise Refused(422, "invalid_body", "the body is not an object")
        required, optional = BODY_FIELDS[endpoint]
        missing = required - body.keys()
        unknown = body.keys() - required - optional
        if missing or unknown:
            raise Refused(422, "invalid_body", f"missing {sorted(missing)}, unknown {sorted(unknown)}")
        if "worker" in body:
            w = body["worker"]
            if not isinstance(w, dict) or not {"id", "name", "slots"} <= w.keys() or w.keys() - WORKER_FIELDS:
                raise Refused(422, "invalid_body", f"bad worker {w}")
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", w["id"]):
                raise Refused(422, "invalid_body", "bad worker id")
            self.workers[w["id"]] = w
        for line in body.get("logs") or []:
            if "message" not in line or line.keys() - LOG_FIELDS:
                raise Refused(422, "invalid_body", f"bad log line {line}")
        if endpoint == "fail" and body["error"].keys() - {"message", "type", "retry"}:
            raise Refused(422, "invalid_body", "bad error")

    def _held(self, job_id: str, lease: str | None) -> FakeJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise Refused(404, "not_found", "no such job")
        if not lease:
            raise Refused(400, "bad_request", "no lease")
        if job.lease != lease or job.status != "IN_PROGRESS":
            raise Refused(409, "lease_lost", "the lease is no longer held")
        return job

    def serve(self, method: str, path: str, headers: Any, raw: bytes) -> tuple[int, Any]:
        endpoint = _endpoint(path)
        if endpoint == "bucket":
            # The S3 bucket behind a presigned URL: no worker token, the signed headers.
            if headers.get("Authorization") is not None or headers.get("x-amz-signed") != "yes":
                raise Refused(403, "forbidden", "not as presigned")
            _, _, job_id, name = path.split("/", 3)
            with self.cond:
                self.jobs[job_id].files[name] = (headers.get("Content-Type") or "", raw)
            return 200, {}
        if headers.get("Authorization") != f"Bearer {TOKEN}":
            raise Refused(401, "unauthorized", "unknown token")
        with self.cond:
            if self.faults[endpoint]:
                status = self.faults[endpoint].pop(0)
                return status, {"id": "fault", "message": f"scripted {status}"}
        body: Any = None
        if endpoint != "files":
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                raise Refused(400, "bad_request", "malformed JSON")
            self._check(endpoint, body)
            self.bodies[endpoint].append(body)
        if endpoint == "take":
            return 200, self._take(body)
        if endpoint == "heartbeat":
            return 200, self._heartbeat(body)
        m = re.fullmatch(r"/v1/worker/jobs/([^/]+)/(?:files/([^/]+)|\w+)(?:/presign)?", path)
        assert m, path
        job_id, name = m.group(1), m.group(2)
        with self.cond:
            if endpoint == "files":
                job = self._held(job_id, headers.get("X-Invokd-Lease"))
                if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", name) or "." not in name:
                    raise Refused(400, "bad_request", "bad file name")
                if len(raw) > self.max_bytes:
                    raise Refused(413, "too_large", "file too large")
                ctype = headers.get("Content-Type") or "application/octet-stream"
                job.files[name] = (ctype, raw)
                return 201, {
                    "url": f"blob:{job_id}/{name}",
                    "file_name": name,
                    "content_type": ctype,
                    "file_size": len(raw),
                }
            job = self._held(job_id, body.get("lease"))
            if endpoint == "presign":
                if not self.presign:
                    raise Refused(404, "not_found", "no presigned uploads here")
                name = path.split("/")[-2]
                return 200, {
                    "url": f"blob:{job_id}/{name}",
                    "put_url": f"{self.url}/bucket/{job_id}/{name}",
                    "headers": {"x-amz-signed": "yes"},
                    "expires_at": "2026-12-08T11:00:00Z",
                }
            if endpoint == "partial":
                job.partials.append(body["output"])
                return 202, {}
            job.logs.extend(body.get("logs") or [])
            if endpoint == "complete":
                problem = self.output_check(job, body["output"]) if self.output_check else None
                if problem:
                    raise Refused(422, "invalid_output", problem)
                job.output = body["output"]
                self._end(job, "COMPLETED", "complete")
            elif endpoint == "fail":
                job.error = body["error"]
                if job.cancel_asked:
                    self._end(job, "CANCELED", "fail")
                elif body["error"].get("retry") and job.attempt < self.max_attempts:
                    self._requeue(job, "fail", next_attempt=True)
                else:
                    self._end(job, "FAILED", "fail")
            elif endpoint == "release":
                if job.cancel_asked:
                    self._end(job, "CANCELED", "release")
                else:
                    self._requeue(job, "release", next_attempt=False)
            else:
                raise Refused(404, "not_found", path)
            return 200, {"status": job.status}

    def _end(self, job: FakeJob, status: str, how: str) -> None:
        job.status, job.lease = status, None
        job.ends.append(how)
        self.cond.notify_all()

    def _requeue(self, job: FakeJob, how: str, *, next_attempt: bool) -> None:
        job.status, job.lease = "QUEUED", None
        job.ends.append(how)
        if next_attempt:
            job.attempt += 1
        self.queue.insert(0, job.id)
        self.cond.notify_all()

    def _take(self, body: dict[str, Any]) -> dict[str, Any]:
        free = body["free"]
        if not 1 <= free <= 64:
            raise Refused(400, "bad_request", "free must be 1 to 64")
        deadline = time.monotonic() + min(body.get("wait_ms", 30_000), 60_000) / 1000
        with self.cond:
            while True:
                self.queue = [j for j in self.queue if self.jobs[j].status == "QUEUED"]
                # A taken-back job (its lease lapsed) is queued too.
                for j in self.jobs.values():
                    if j.status == "QUEUED" and j.id not in self.queue and not j.cancel_asked:
                        self.queue.append(j.id)
                if self.queue:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return {"jobs": []}
                self.cond.wait(left)
            out = []
            for job_id in self.queue[:free]:
                job = self.jobs[job_id]
                job.status = "IN_PROGRESS"
                job.lease = f"{job.attempt}.w.{uuid.uuid4().hex}"
                out.append(
                    {
                        "id": job.id,
                        "model": job.model,
                        "input": job.input,
                        "attempt": job.attempt,
                        "lease": job.lease,
                        "lease_expires_at": "2026-12-08T10:00:30Z",
                        "heartbeat_every_ms": self.heartbeat_every_ms,
                        "kind": "image",
                        "output": {"fields": ["images", "seed", "prompt"]},
                        "files": {
                            "upload_url": f"{self.url}/v1/worker/jobs/{job.id}/files",
                            "presign": self.presign,
                            "max_bytes": self.max_bytes,
                        },
                    }
                )
            self.queue = self.queue[free:]
            self.cond.notify_all()
            return {"jobs": out}

    def _heartbeat(self, body: dict[str, Any]) -> dict[str, Any]:
        cancel, lost = [], []
        with self.cond:
            for held in body.get("jobs") or []:
                if held.keys() - {"id", "lease", "logs", "progress"}:
                    raise Refused(422, "invalid_body", "bad held job")
                job = self.jobs.get(held["id"])
                if job is None or job.id in self.refuse_beats:
                    raise Refused(403, "forbidden", "not this token's job")
                if job.lease != held["lease"] or job.status != "IN_PROGRESS":
                    lost.append(job.id)
                    continue
                job.logs.extend(held.get("logs") or [])
                if held.get("progress") is not None:
                    job.progress.append(held["progress"])
                if job.cancel_asked:
                    cancel.append(job.id)
            self.cond.notify_all()
        return {"lease_expires_at": "2026-12-08T10:00:40Z", "cancel": cancel, "lost": lost}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    status, body = fake.serve(self.command, self.path, self.headers, raw)
                except Refused as e:
                    status, body = e.status, {"id": e.code, "message": e.message}
                with fake.cond:
                    fake.requests.append((time.monotonic(), self.command, self.path, status))
                    fake.cond.notify_all()
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _serve

        return Handler


def _endpoint(path: str) -> str:
    if path.startswith("/bucket/"):
        return "bucket"
    if path.endswith("/presign"):
        return "presign"
    if "/files/" in path:
        return "files"
    return path.rstrip("/").rsplit("/", 1)[-1]
