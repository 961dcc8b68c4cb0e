"""The gateway's HTTP calls, each retried with exponential backoff and jitter on network
errors, 429 and 5xx (never on another 4xx, which the same call would only meet again)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx

from .errors import GatewayError, GatewayUnreachable

log = logging.getLogger("invokd_worker")


class Backoff:
    """Delays between the tries of one call: ``base * 2**n`` capped at ``cap``, each drawn at
    random from its upper half (so many workers that failed at once do not retry at once)."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng or random.Random()

    def delay(self, n: int, retry_after: float | None = None) -> float:
        ceiling = min(self.cap, self.base * float(2**n))
        drawn = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
        if retry_after is not None:
            # The gateway's own word, within the cap.
            return min(self.cap, max(drawn, retry_after))
        return drawn


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_of(resp: httpx.Response) -> GatewayError:
    code: str | None = None
    message = resp.text.strip() or resp.reason_phrase
    try:
        body = resp.json()
        if isinstance(body, dict):
            code = body.get("id") if isinstance(body.get("id"), str) else None
            if isinstance(body.get("message"), str):
                message = body["message"]
    except ValueError:
        pass
    return GatewayError(resp.status_code, code, message)


def retryable_status(status: int) -> bool:
    """Whether the same call may succeed later: 429 and every 5xx."""
    return status == 429 or status >= 500


class Gateway:
    """The worker protocol's calls against one gateway, with the worker token."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        backoff: Backoff,
        max_tries: int,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.backoff = backoff
        self.max_tries = max(1, max_tries)
        self.client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
            # Sooner than the gateway closes an idle connection (20 s), so a heartbeat after a
            # quiet spell never goes out on a connection the gateway is closing.
            limits=httpx.Limits(keepalive_expiry=10.0),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.api_url + path

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: Callable[[], bytes | AsyncIterator[bytes]] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        max_tries: int | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        """One call, tried again on network errors, 429 and 5xx up to ``max_tries`` times.

        Answers the 2xx response; raises ``GatewayError`` for any other status (the last one
        when retries ran out) and ``GatewayUnreachable`` when the network failed every try.
        ``content`` makes the body afresh for each try (a file is read again). ``auth=False``
        sends no worker token (a presigned URL of the bucket).
        """
        tries = max_tries or self.max_tries
        url = self.url(path)
        for n in range(tries):
            last = n == tries - 1
            kwargs: dict[str, Any] = {"headers": dict(headers or {})}
            if json is not None:
                kwargs["json"] = json
            if content is not None:
                kwargs["content"] = content()
            if timeout is not None:
                kwargs["timeout"] = timeout
            request = self.client.build_request(method, url, **kwargs)
            if not auth:
                request.headers.pop("Authorization", None)
            try:
                resp = await self.client.send(request)
            except httpx.TransportError as e:
                if last:
                    raise GatewayUnreachable(f"{method} {url}: {e!r}") from e
                wait = self.backoff.delay(n)
                log.warning("%s %s failed (%r); trying again in %.2f s", method, url, e, wait)
                await asyncio.sleep(wait)
                continue
            if resp.is_success:
                return resp
            if retryable_status(resp.status_code) and not last:
                wait = self.backoff.delay(n, _retry_after(resp))
                log.warning(
                    "%s %s answered %d; trying again in %.2f s",
                    method,
                    url,
                    resp.status_code,
                    wait,
                )
                await asyncio.sleep(wait)
                continue
            raise _error_of(resp)
        raise AssertionError("unreachable")
