"""The serving engine behind `loradb route`: a vLLM server with LoRA and runtime adapter
loading, reached over its OpenAI-compatible HTTP API.

loradb never generates here: it decides which adapter serves a request, makes it, has the
engine load it (`/v1/load_lora_adapter`) and forwards the request. This module is the only
one that speaks to the engine; it turns a refused connection into EngineDown (the router
answers 503 with the cause, as the service does for a PostgreSQL that is down) and an
engine's own refusal into EngineRefused with the engine's message.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from loradb.errors import LoradbError, Unavailable

# a load reads the adapter from disk and sets its slot; a completion on this CPU can take long
LOAD_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 600.0


class EngineDown(Unavailable):
    """The engine cannot be reached (not started, restarting, crashed): HTTP 503."""


class EngineTimeout(EngineDown):
    """The engine took longer than the router waits (a completion, a load): HTTP 504."""


class EngineRefused(LoradbError):
    """The engine answered with an error (a bad adapter, a request it will not serve)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status

    @property
    def already_loaded(self) -> bool:
        """vLLM refusing to load a name it holds (its message since 0.6): the adapter is there."""
        return self.status == 400 and "has already been loaded" in str(self)

    @property
    def unknown_model(self) -> bool:
        """vLLM answering a completion for a model it does not serve (`The model ... does not
        exist`): an adapter the router believed loaded is gone (the engine restarted)."""
        return self.status == 404 and "does not exist" in str(self)


@dataclass(frozen=True)
class EngineLimits:
    """What the engine was started with, which every composition must fit: at most
    `max_loras` adapters loaded at once, each of rank at most `max_lora_rank`."""

    max_loras: int
    max_lora_rank: int

    def __post_init__(self):
        if self.max_loras < 1:
            raise LoradbError(f"`max_loras` must be at least 1, got {self.max_loras}")
        if self.max_lora_rank < 1:
            raise LoradbError(f"`max_lora_rank` must be at least 1, got {self.max_lora_rank}")


class Engine:
    """An async client of one vLLM server (`url`, e.g. http://127.0.0.1:8100)."""

    def __init__(self, url: str, *, client: httpx.AsyncClient | None = None):
        self.url = url.rstrip("/")
        self.client = client or httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=5.0))

    async def close(self) -> None:
        await self.client.aclose()

    async def models(self) -> list[dict]:
        """What the engine serves (its /v1/models entries): its base model first (`root` is its
        directory), then the adapters loaded."""
        return (await self._call("GET", "/v1/models")).json().get("data", [])

    async def load(self, name: str, path: str) -> None:
        """Load the adapter at `path` as `name`; one the engine already holds under that name is
        taken as loaded (a name is a hash of the composition: the same adapter), as after a
        load that timed out here but finished in the engine, or a restart of the router."""
        try:
            await self._call("POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path},
                             timeout=LOAD_TIMEOUT_S, what=f"loading adapter {name}")
        except EngineRefused as e:
            if not e.already_loaded:
                raise

    async def adapters(self) -> list[str]:
        """The names of the adapters the engine holds (its /v1/models entries after the base)."""
        return [m["id"] for m in (await self.models())[1:] if isinstance(m, dict) and isinstance(m.get("id"), str)]

    async def unload(self, name: str) -> None:
        await self._call("POST", "/v1/unload_lora_adapter", json={"lora_name": name}, timeout=LOAD_TIMEOUT_S,
                         what=f"unloading adapter {name}")

    async def post(self, path: str, body: dict) -> dict:
        """A non-streaming request (a completion): the engine's JSON answer."""
        return (await self._call("POST", path, json=body)).json()

    async def stream(self, path: str, body: dict) -> AsyncIterator[bytes]:
        """A streaming request: the engine's server-sent events as they come. An error the engine
        gives before streaming is raised as EngineRefused (nothing has been sent to the client yet)."""
        try:
            async with self.client.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise EngineRefused(_engine_message(response), response.status_code)
                async for chunk in response.aiter_bytes():  # decoded: the router's answer sets no content-encoding
                    yield chunk
        except httpx.TransportError as e:
            raise _unreachable(self.url, e) from None

    async def _call(self, method: str, path: str, *, json: dict | None = None, timeout: float | None = None,
                    what: str | None = None) -> httpx.Response:
        try:
            response = await self.client.request(method, path, json=json,
                                                 timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.TransportError as e:
            raise _unreachable(self.url, e, what) from None
        if response.status_code >= 400:
            message = _engine_message(response)
            raise EngineRefused(f"{what}: {message}" if what else message, response.status_code)
        return response


def _unreachable(url: str, e: httpx.TransportError, what: str | None = None) -> EngineDown:
    if isinstance(e, httpx.TimeoutException) and not isinstance(e, httpx.ConnectTimeout):  # reached, but slow
        return EngineTimeout(f"the vLLM engine at {url} did not answer in time{f' ({what})' if what else ''}: "
                             f"{type(e).__name__}")
    return EngineDown(f"the vLLM engine at {url} cannot be reached ({type(e).__name__}: {e})")


def _engine_message(response: httpx.Response) -> str:
    """The engine's own error message (OpenAI's {"error": {"message": ...}} or FastAPI's detail)."""
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        return f"the engine answered {response.status_code}: {response.text[:300]}"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return f"the engine answered {response.status_code}: {error['message']}"
        if body.get("message") or body.get("detail"):
            return f"the engine answered {response.status_code}: {body.get('message') or body.get('detail')}"
    return f"the engine answered {response.status_code}: {str(body)[:300]}"
