"""A hard cap on request bodies, enforced while they arrive (not after buffering them)."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException


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
