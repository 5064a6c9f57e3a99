"""`loradb route`: an OpenAI-compatible endpoint in front of a vLLM engine that chooses and
composes the adapter serving each request.

A request's `model` says what serves it:
- `loradb:auto`: z of the request's own prompt, retrieval, weights and the fit decision
  (abstain: the base model serves), an exact composition (compressed to the engine's
  max_lora_rank only when it must be), loaded into the engine if it is not there yet;
  options in the body's `loradb` field (k, method, key, temperature, l1, scale, force, task,
  represent: the texts to represent instead of the prompt);
- a named adaptation (`POST /v1/adaptations`): retrieval done once, on an unlabeled sample;
- a record's name or id: that adapter alone;
- the engine's base model: no adapter.
Every answer says which records and weights served it: the X-Loradb-Adapters header, and a
`loradb` field in a JSON answer. Errors are OpenAI-shaped ({"error": {"message", "type"}}):
an unknown model 404, bad input 400, an engine that is down 503 with the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from loradb.errors import AccessDenied, Conflict, LoradbError, NotFound, OverLimit, Unavailable
from loradb.route.adaptations import Adaptations
from loradb.route.engine import Engine, EngineLimits, EngineRefused, EngineTimeout
from loradb.route.library import AUTO, Library
from loradb.route.loaded import LoadedSet
from loradb.route.plan import Plan
from loradb.route.prompts import request_texts

log = logging.getLogger("loradb.route")

MAX_BODY_BYTES = 8 << 20  # a completion request: prompts and options, never weights
MAX_ADAPTATION_TEXTS = 1024
HEADER = "X-Loradb-Adapters"


class Router:
    """The router's state: the database side, the engine and what it holds.

    The database side runs in two threads, each with its own handle: the worker does the long
    work (represent, search, compose), the reader the short reads every request makes (is a
    record gone, which record a name is), so a request served by a cached adapter, a record or
    the base model never waits behind another request's composition."""

    def __init__(self, db: str, *, engine_url: str, base: str, limits: EngineLimits, state: Path):
        self.limits = limits
        self.engine = Engine(engine_url)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loradb-route")
        self.reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loradb-route-read")
        # one folder per router host and engine: a router starting clears its engine's, never a
        # replica's sharing the state folder (each engine is often 127.0.0.1:8100 on its own host)
        engine_at = f"{socket.gethostname()}_{urlsplit(engine_url).netloc or engine_url}"
        compositions = state / "compositions" / re.sub(r"[^A-Za-z0-9.-]", "_", engine_at)
        self.library: Library = self.worker.submit(Library, db, base=base, limits=limits,
                                                   compositions=compositions).result()
        self.catalog: Library = self.reader.submit(Library, db, base=base, limits=limits,
                                                   compositions=compositions).result()
        self.adaptations = Adaptations(state / "adaptations.json")
        self.loaded = LoadedSet(self.engine, limits.max_loras, self._compose, self._discard, self._unloaded)
        self.plans: dict[str, Plan] = {}  # engine name -> plan of each composition made and not yet unloaded
        self.base_name: str | None = None  # the engine's own name for its base model
        self.started = 0  # when the router started (unix seconds): its models' `created`
        self._dropping: set[str] = set()  # compositions of removed records being unloaded in the background
        self._undropped: set[str] = set()  # ... whose unload failed (the engine down): tried again at each request
        self._tasks: set[asyncio.Task] = set()

    async def _blocking(self, fn, *args, **kwargs):
        """Long database work (represent, search, compose), in the worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.worker, lambda: fn(*args, **kwargs))

    async def _reading(self, fn, *args, **kwargs):
        """A short database read, in the reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self.reader, lambda: fn(*args, **kwargs))

    async def _compose(self, plan: Plan) -> Path:
        path, compression = await self._blocking(self.library.compose, plan)
        self.plans[plan.engine_name] = plan
        if compression is not None:
            log.info("composition %s compressed to rank %s: %s", plan.engine_name, plan.spec.rank, compression)
        return path

    async def _discard(self, plan: Plan) -> None:
        """Forget a composition the engine would not load (its folder is nobody's)."""
        self.plans.pop(plan.engine_name, None)
        await asyncio.to_thread(self.library.discard, plan.key)

    async def _unloaded(self, name: str) -> None:
        """An adapter the engine no longer holds (evicted, or of a removed record): its composition
        is deleted, so the disk holds what is loaded, not every composition ever made."""
        plan = self.plans.pop(name, None)
        if plan is not None:
            await asyncio.to_thread(self.library.discard, plan.key)

    async def start(self) -> None:
        """Check that the engine serves the router's base model, and warm the encoder."""
        from loradb.lora.base import load_base
        from loradb.models.locate import locate

        models = await self.engine.models()
        if not models:
            raise LoradbError(f"the engine at {self.engine.url} serves no model")
        root = models[0].get("root") or models[0]["id"]
        where = root if Path(root).is_dir() else locate(root, None, build_packaged=False)  # a folder, or a cached hub id
        served = load_base(where) if where is not None else None
        if served is None or served.fingerprint != self.library.base.fingerprint:
            raise LoradbError(f"the engine serves {root}, not the router's base model {self.library.base.short}; start "
                              "the engine on the same model directory")
        self.base_name = models[0]["id"]
        # adapters an earlier router left in the engine: their plans are not known here, so they
        # are unloaded (a request loads its composition again), then their folders deleted
        for name in await self.engine.adapters():
            if name.startswith("loradb-"):
                with contextlib.suppress(EngineRefused):
                    await self.engine.unload(name)
        await asyncio.to_thread(self.library.clear_compositions)
        self.started = int(time.time())
        await self._blocking(self.library.warm)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.engine.close()
        self.worker.submit(self.library.close).result()
        self.reader.submit(self.catalog.close).result()
        self.worker.shutdown()
        self.reader.shutdown()

    async def plan(self, model: Any, body: dict) -> Plan:
        if not isinstance(model, str) or not model:
            raise LoradbError("`model` must name what serves the request: loradb:auto, an adaptation, a record, or the base model")
        options = body.pop("loradb", None)
        if options is not None and not isinstance(options, dict):
            raise LoradbError("the `loradb` field must be an object of options (k, method, key, ...)")
        if model != AUTO and options:
            raise LoradbError(f"the `loradb` options apply to {AUTO} only, not to model {model!r}")
        await self._invalidate()
        if model == AUTO:
            texts = request_texts(body)
            return await self._blocking(self.library.plan_auto, texts, options or {})
        if model == self.base_name:
            return Plan(parts=(), chosen_by="base")
        adaptation = self.adaptations.get(model)
        if adaptation is not None:
            await self._reading(self.catalog.check_plan, adaptation)
            return adaptation
        plan = await self._reading(self.catalog.plan_record, model)
        if plan is None:
            raise NotFound(f"unknown model {model!r}: not {AUTO}, an adaptation, a record of the database, or the "
                           f"engine's base model {self.base_name}; GET /v1/models lists them")
        return plan

    async def _invalidate(self) -> None:
        """Drop every cached composition that used a record since removed from the database: in
        the background, since an adapter is unloaded only once the requests using it are done
        (no new request can plan a removed record), and this request need not wait for them."""
        used = set().union(*(p.record_ids for p in self.plans.values())) if self.plans else set()
        gone = await self._reading(self.catalog.removed_records, used)
        stale = ({name for name, plan in self.plans.items() if plan.record_ids & gone} | self._undropped) - self._dropping
        if stale:
            self._dropping |= stale
            task = asyncio.create_task(self._drop(stale))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drop(self, stale: set[str]) -> None:
        try:
            gone = await self.loaded.drop(stale)  # an unloaded adapter's composition is deleted then (_unloaded)
            for name in gone:  # and one the engine never held (refused, or evicted meanwhile) now
                await self._unloaded(name)
            self._undropped = (self._undropped | stale) - gone
            if stale - gone:
                log.warning("the engine kept %d composition(s) of removed records; trying again at the next request",
                            len(stale - gone))
        finally:
            self._dropping -= stale

    async def writer(self, request: Request) -> None:
        """Making or removing an adaptation changes what every client of the router is served: it
        needs a token of the database with write scope (`loradb token create DB --scope write`),
        sent as `Authorization: Bearer ...`. Completions need none (as vLLM's own API)."""
        from loradb.db.access import Scope, authenticate

        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise AccessDenied("making or removing an adaptation needs a write token of the database: send "
                               "`Authorization: Bearer TOKEN` (`loradb token create DB --name NAME --scope write`)",
                               authenticated=False)
        principal = await self._reading(authenticate, self.catalog.db, secret.strip())
        principal.require(Scope.WRITE)

    async def model_list(self) -> list[dict]:
        names = await self._reading(self.catalog.record_names)
        entry = lambda name, owner: {"id": name, "object": "model", "created": self.started, "owned_by": owner}  # noqa: E731
        return [entry(self.base_name, "engine"), entry(AUTO, "loradb"),
                *(entry(name, "loradb:adaptation") for name in self.adaptations.names()),
                *(entry(name, "loradb:record") for name in names)]


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def _error_response(e: Exception) -> JSONResponse:
    if isinstance(e, AccessDenied):
        return _error(403 if e.authenticated else 401, str(e), "permission_denied" if e.authenticated else "unauthorized")
    if isinstance(e, EngineTimeout):
        return _error(504, str(e), "engine_timeout")
    if isinstance(e, Unavailable):
        return _error(503, str(e), "engine_unavailable")
    if isinstance(e, EngineRefused):
        return _error(e.status if 400 <= e.status < 500 else 502, str(e), "engine_error")
    if isinstance(e, NotFound):
        return _error(404, str(e), "not_found")
    if isinstance(e, Conflict):
        return _error(409, str(e), "conflict")
    if isinstance(e, OverLimit):
        return _error(413, str(e), "over_limit")
    return _error(400, str(e), "invalid_request")


async def _json_body(request: Request) -> dict:
    size = int(request.headers.get("content-length") or 0)
    if size > MAX_BODY_BYTES:
        raise OverLimit(f"the request body is {size} bytes; at most {MAX_BODY_BYTES} are accepted")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise OverLimit(f"the request body exceeds {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except ValueError:
        raise LoradbError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise LoradbError("the request body must be a JSON object")
    return body


def create_app(router: Router) -> Starlette:
    async def completions(request: Request) -> Response:
        try:
            body = await _json_body(request)
            plan = await router.plan(body.get("model"), body)
            return await _forward(router, request.url.path, body, plan)
        except LoradbError as e:
            return _error_response(e)

    async def models(request: Request) -> Response:
        try:
            return JSONResponse({"object": "list", "data": await router.model_list()})
        except LoradbError as e:
            return _error_response(e)

    async def adaptations(request: Request) -> Response:
        try:
            if request.method == "GET":
                return JSONResponse({"data": router.adaptations.describe()})
            await router.writer(request)
            body = await _json_body(request)
            name = router.adaptations.check_new_name(body.get("name"), reserved={AUTO, router.base_name or ""})
            options = {k: v for k, v in body.items() if k not in ("name", "texts")}
            texts = body.get("texts")
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
                raise LoradbError("`texts` must be a non-empty list of non-empty strings: an unlabeled sample of the "
                                  "data the adaptation is for")
            if len(texts) > MAX_ADAPTATION_TEXTS:  # z is a mean: a sample this size pins it; more only holds the worker
                raise OverLimit(f"`texts` holds {len(texts)} texts; an adaptation takes a sample of at most "
                                f"{MAX_ADAPTATION_TEXTS}")
            plan = await router._blocking(router.library.plan_auto, texts, options, chosen_by="adaptation")
            plan = router.adaptations.add(name, plan, n_texts=len(texts))
            return JSONResponse({"name": name, "loradb": plan.describe()}, status_code=201)
        except LoradbError as e:
            return _error_response(e)

    async def adaptation(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            if request.method == "DELETE":
                await router.writer(request)
                router.adaptations.remove(name)
                return JSONResponse({"removed": name})
            found = router.adaptations.get(name)
            if found is None:
                raise NotFound(f"no adaptation named {name!r}")
            return JSONResponse({"name": name, "loradb": found.describe()})
        except LoradbError as e:
            return _error_response(e)

    async def health(request: Request) -> Response:
        """Ready when the engine answers (a load balancer's probe); 503 with the cause when not."""
        try:
            await router.engine.models()
        except LoradbError as e:
            return _error_response(e)
        return JSONResponse({"status": "ok", "engine": router.engine.url, "loaded": len(router.loaded.names)})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await router.start()
        yield
        await router.close()

    return Starlette(routes=[
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/v1/adaptations", adaptations, methods=["GET", "POST"]),
        Route("/v1/adaptations/{name}", adaptation, methods=["GET", "DELETE"]),
    ], lifespan=lifespan)


async def _forward(router: Router, path: str, body: dict, plan: Plan) -> Response:
    """The request, its `model` set to what serves it, answered by the engine; the plan's adapter
    is held loaded until the answer has been sent. An engine that no longer holds an adapter the
    router counted as loaded (it restarted) answers 404: the adapter is loaded again, once."""
    asked = body["model"]
    try:
        return await _forward_once(router, path, body, plan, asked)
    except _AdapterGone:
        log.warning("the engine no longer holds %s (restarted?): loading it again", plan.engine_name)
    try:
        return await _forward_once(router, path, body, plan, asked)
    except _AdapterGone as again:  # gone right after loading it: the engine's own answer
        raise again.refusal from None


class _AdapterGone(Exception):
    """The engine answered that it does not serve the adapter the router had it load."""

    def __init__(self, refusal: EngineRefused):
        super().__init__(str(refusal))
        self.refusal = refusal


async def _forward_once(router: Router, path: str, body: dict, plan: Plan, asked: str) -> Response:
    stack = contextlib.AsyncExitStack()
    held = None
    try:
        described = plan.describe()
        if plan.parts:
            described["cached"] = await stack.enter_async_context(router.loaded.use(plan))
            held = router.loaded.load_of(plan.engine_name)
            body["model"] = plan.engine_name
        else:
            body["model"] = router.base_name
        headers = {HEADER: plan.header()}
        if not body.get("stream"):
            answer = await router.engine.post(path, body)
            answer["model"] = asked  # as the client named it (gateways account by it); the adapter is in `loradb`
            answer["loradb"] = described
            return JSONResponse(answer, headers=headers)
        chunks = router.engine.stream(path, body).__aiter__()
        try:
            first = await chunks.__anext__()  # the engine's refusal comes before any event: still an HTTP error
        except StopAsyncIteration:
            first = b""
    except EngineRefused as e:
        await stack.aclose()
        if plan.parts and e.unknown_model:  # nothing was answered: the request may go again, once
            await router.loaded.forget(plan.engine_name, held)
            raise _AdapterGone(e) from e
        raise
    except BaseException:
        await stack.aclose()
        raise

    async def events():
        try:
            yield first
            async for chunk in chunks:
                yield chunk
        except LoradbError as e:  # the engine failed mid-answer: the status is sent, so say it as an event
            log.warning("the engine's stream for %s broke off: %s", body["model"], e)
            yield b"data: " + json.dumps({"error": {"message": str(e), "type": "engine_error"}}).encode() + b"\n\n"
        finally:
            await stack.aclose()

    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

