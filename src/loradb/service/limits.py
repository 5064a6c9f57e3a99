"""Limits a server enforces: a hard cap on request bodies, enforced while they arrive (not
after buffering them), and a request rate per token."""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
import time

from starlette.exceptions import HTTPException

from loradb.errors import LoradbError


class BodyLimit:
    """ASGI middleware: 413 for a declared Content-Length over the cap, and for a body
    (chunked or lying about its length) that turns out longer while being read."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(send, f"request body of {declared.decode(errors='replace')} bytes exceeds "
                                            f"this server's limit of {self.max_bytes} bytes")
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # raised inside the route's body parsing: FastAPI turns it into the response
                    raise HTTPException(413, f"request body exceeds this server's limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, counted_receive, send)

    @staticmethod
    async def _refuse(send, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class RateLimited(LoradbError):
    """More requests than the server's --rate-limit allows for one token (HTTP 429)."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


def parse_rate(text: str) -> float:
    """`--rate-limit` as requests per second: "N/s" or "N/min"."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*/\s*(s|sec|second|m|min|minute)\s*", str(text))
    if not match or float(match.group(1)) <= 0:
        raise LoradbError(f"`rate_limit` takes N/s or N/min with N > 0, got {text!r}")
    per = 1.0 if match.group(2).startswith("s") else 60.0
    return float(match.group(1)) / per


class RateLimiter:
    """A token bucket per key (a token's id; the client address for anonymous public reads):
    `rate` requests per second on average, bursts up to max(1, rate) at once.

    The table holds at most MAX_KEYS buckets, least recently used evicted first, one at a time
    (O(1) per request, never a rebuild under the lock). An evicted key starts again with a full
    bucket, so the cap must exceed the keys active at once: token ids are few, and anonymous
    keys are connection addresses, which a request cannot choose (serve --trusted-proxy)."""

    MAX_KEYS = 100_000

    def __init__(self, rate: float, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, max(1.0, rate), clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        """Count one request for `key`, or raise RateLimited with the seconds until one is allowed."""
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            allowed = tokens >= 1
            self._buckets[key] = (tokens - 1 if allowed else tokens, now)  # the most recently used, last
            if len(self._buckets) > self.MAX_KEYS:
                self._buckets.popitem(last=False)
        if not allowed:
            wait = (1 - tokens) / self.rate
            raise RateLimited(f"more than {self.rate:g} requests per second for this token; retry in {wait:.2f} s", wait)
