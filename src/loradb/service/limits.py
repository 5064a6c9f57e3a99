"""Limits a server enforces: a hard cap on request bodies, enforced while they arrive (not
after buffering them), and a request rate per token."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import threading
from collections import OrderedDict
import time

from starlette.exceptions import HTTPException

from loradb.errors import LoradbError

log = logging.getLogger("loradb.service")


class Gate:
    """ASGI middleware in front of the API, acting on a request's headers before any byte of
    its body is received:

    - a route that needs a token scope (its `needs` dependency says which) is admitted by
      `admit(headers, client address, scope)`: authenticated, rate-limited and its scope
      checked, or answered 401/403/429 at once, so no body of an unauthenticated request is
      read, spooled or parsed; the principal goes to the route in `request.state`;
    - every body is capped while it arrives: the upload route at `upload_bytes`, every other
      route at `json_bytes` (what its largest legitimate JSON body needs). A declared
      Content-Length over the cap is a 413 at once; a body (chunked, or lying about its
      length) that turns out longer is one as soon as it passes the cap.
    """

    def __init__(self, app, admit, refusal, *, upload: tuple[str, str], upload_bytes: int, json_bytes: int):
        self.app, self.admit, self.refusal = app, admit, refusal  # refusal(error) -> (status, message, headers)
        self.upload, self.upload_bytes, self.json_bytes = upload, upload_bytes, json_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        needed = self._scope_needed(scope)
        if needed is not None:
            from starlette.concurrency import run_in_threadpool

            client = _client_key(scope["client"][0]) if scope.get("client") else "?"
            try:  # a token lookup reads the database: in a worker thread, as routes do
                principal = await run_in_threadpool(self.admit, headers, client, needed)
            except LoradbError as e:
                status, message, extra = self.refusal(e)
                return await _answer(send, status, message, extra)
            except Exception as e:  # a bug or a database error: logged in full, answered in one line as the routes do
                log.exception("internal error admitting %s %s", scope["method"], scope["path"])
                return await _answer(send, 500, f"internal server error ({type(e).__name__}); the server log has the details")
            scope.setdefault("state", {})["principal"] = principal
        cap = self.upload_bytes if (scope["method"], scope["path"]) == self.upload else self.json_bytes
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > cap):
            return await _answer(send, 413, f"request body of {declared.decode(errors='replace')} bytes exceeds "
                                            f"this server's limit of {cap} bytes for {scope['path']}")
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    # raised inside the route's body parsing: FastAPI turns it into the response
                    raise HTTPException(413, f"request body exceeds this server's limit of {cap} bytes for {scope['path']}")
            return message

        await self.app(scope, counted_receive, send)

    def _scope_needed(self, scope):
        """The token scope the route of this request needs (None: the route needs none)."""
        from starlette.routing import Match

        for route in getattr(self.app, "routes", ()):
            match, _ = route.matches(scope)
            if match is Match.FULL:
                dependant = getattr(route, "dependant", None)
                return next((d.call.loradb_scope for d in (dependant.dependencies if dependant else [])
                             if hasattr(d.call, "loradb_scope")), None)
        return None


def _client_key(address: str) -> str:
    """The anonymous rate bucket of a client address: the address, or an IPv6 client's /64
    (one host can hold every address of its /64 and would otherwise get a bucket for each)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 and not ip.ipv4_mapped else address


async def _answer(send, status: int, message: str, headers: dict | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *((k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items())]})
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
