"""The exceptions a handler raises to fail a job, and those the SDK raises itself."""

from __future__ import annotations


class JobError(Exception):
    """Fails the job with ``message``.

    Raise it from a handler to choose the error's ``type`` (fal's error type, ``runtime_error``
    when not given) and whether another attempt may succeed (``retry``). Any other exception
    fails the job too, with its message and ``retry=False``.
    """

    def __init__(self, message: str, *, type: str | None = None, retry: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.type = type
        self.retry = retry


class RetryableError(JobError):
    """Fails this attempt and asks the gateway for another (while attempts remain).

    For failures that another try may not meet: a busy GPU, a model server that restarted, a
    download that timed out.
    """

    def __init__(self, message: str, *, type: str | None = None) -> None:
        super().__init__(message, type=type, retry=True)


class JobCancelled(Exception):
    """Raised by the SDK's job calls once the job was cancelled or its lease lost.

    A handler may let it propagate: the job's end is then what the gateway asked for (a
    cancelled job ends ``CANCELED``; a lost one is dropped), never a failure of its own.
    """


class GatewayError(Exception):
    """The gateway answered a call with an error status (after any retries).

    ``status`` is the HTTP status, ``code`` the error's ``id`` (DigitalOcean's error shape) and
    ``message`` its message.
    """

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(f"{status} {code or ''}: {message}".replace("  ", " "))
        self.status = status
        self.code = code
        self.message = message


class GatewayUnreachable(Exception):
    """A call to the gateway kept failing on the network (after every retry)."""
