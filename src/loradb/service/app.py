"""The HTTP API over one database: contribute, search, compose and download adapters.

The server never sees raw data: clients send adapters and representation vectors only.
Every request is validated before anything is written; bad input gets a 4xx with one
`{"error": "..."}` line and leaves the database as it was. Each worker thread keeps its
own database handle (SQLite connections are per thread); writers still serialise on the
database's file lock, so several server processes may share one database too.
"""

from __future__ import annotations

import functools
import logging
import math
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel as Schema
from pydantic import ConfigDict, Field, create_model
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from loradb.db.access import Principal, Scope, authenticate
from loradb.db.contribute import check_name
from loradb.db.database import LoraDB
from loradb.db.store.postgres import lost_connection
from loradb.io import jsondoc
from loradb.errors import (Abstained, AccessDenied, BaseModelMismatch, Conflict, LoradbError, NotFound, OverLimit, TooLarge, Unavailable,
                           in_terms)
from loradb.io.files import finite_or_none
from loradb.lora.merges import MERGE_PARAMS, MERGES, MergeSpec
from loradb.weighting.registry import DEFAULT_METHOD, FEW_SHOT, METHODS
from loradb.weighting.scale import MAX_SCALE
from loradb.service.wire import API, ARCHIVE_FILES, ARCHIVE_TYPE, representation_from_doc, write_archive
from loradb.service.catalogue import add_catalogue
from loradb.service.limits import Gate, RateLimited, RateLimiter
from loradb.service.schema import ERROR_RESPONSES, TASK_BYTES, RepresentationDoc

log = logging.getLogger("loradb.service")

MAX_CONFIG_BYTES = 1 << 20  # an adapter_config.json is a few KB
MAX_META_KEYS = 64
MAX_OFFSET = 1 << 40  # far past any database; bounded so it always fits the index's 64-bit integers


class ServerConfig(Schema):
    """How a server runs; set by `loradb serve` flags."""

    db: str  # a database directory or postgresql:// URL
    bases: dict = Field(default_factory=dict)  # fingerprint -> base.BaseModel accepted (empty: any)
    max_upload_bytes: int = 256 << 20
    max_dim: int = 16384
    public_read: bool = False  # reads without a token
    max_k: int = 100  # most adapters one search or compose may retrieve or name
    max_compose_bytes: int = 1 << 30  # working memory one compose may use (compose.working_bytes)
    rate_limit: float | None = None  # requests per second per token (None: unlimited)
    model_config = ConfigDict(arbitrary_types_allowed=True)


class _Query(Schema):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    k: int = Field(5, ge=1, le=1000, description="how many adapters to retrieve")
    method: Literal[tuple(METHODS)] = Field(  # type: ignore[valid-type]  # the registry's names, computed at import
        DEFAULT_METHOD, description="weighting method: " + "; ".join(f"{m.name}: {m.help}" for m in METHODS.values())
        + " (few-shot methods learn on the client, which sends weights)")
    temperature: float | None = Field(None, gt=0, description="lambda_1 of similarity (default automatic)")
    l1: float | None = Field(None, ge=0, description="lambda_2 of sparse (default automatic)")
    key: str | None = Field(None, max_length=64, description="retrieval key (default: the space's chosen key, else raw-l2)")
    scale: float | None = Field(None, gt=0, le=MAX_SCALE, description="every retrieved weight times this (default 1)")
    space: str | None = Field(None, max_length=64, description="representation space id")


class SearchRequest(_Query):
    representation: RepresentationDoc = Field(description="the target's representation: its .npy.json sidecar plus z")


class _Compose(_Query):
    representation: RepresentationDoc | None = Field(None, description="the target's representation (or give weights)")
    weights: dict[str, float] | None = Field(None, max_length=1000, description="record id or name -> weight")
    rank: int | None = Field(None, ge=1, le=65536)
    max_error: float | None = Field(None, ge=0, lt=1)
    merge: Literal[tuple(MERGES)] = Field(  # type: ignore[valid-type]  # the registry's names, computed at import
        "exact", description="; ".join(f"{m.name}: {m.help}" for m in MERGES.values()))
    force: bool = Field(False, description="compose even when nothing in the library fits the target (the search's "
                        "fit decision is to abstain; otherwise HTTP 409 with the fit block)")

    def merge_spec(self) -> MergeSpec:
        return MergeSpec(self.merge, rank=self.rank, max_error=self.max_error,
                         params={p: getattr(self, p) for p in MERGE_PARAMS})


# one field per merge parameter of the registry, with its range (made at runtime, so the type checker sees _Compose)
if TYPE_CHECKING:
    ComposeRequest = _Compose
else:
    ComposeRequest = create_model("ComposeRequest", __base__=_Compose, **{
        p.name: (p.kind, Field(p.default, ge=p.minimum, le=p.maximum, description=f"{', '.join(users)}: {p.help}"))
        for p, users in ((p, [m.name for m in MERGES.values() if p.name in m.params]) for p in MERGE_PARAMS.values())})


# the library's parameter names that the API spells otherwise: a target is sent as its representation
API_FIELDS = {"data": "representation", "repr": "representation", "target": "representation"}


def _status(e: LoradbError) -> int:
    if isinstance(e, AccessDenied):
        return 403 if e.authenticated else 401
    for kind, status in ((Unavailable, 503), (RateLimited, 429), (NotFound, 404), (Conflict, 409), (Abstained, 409),
                         (TooLarge, 413), (OverLimit, 422), (BaseModelMismatch, 422)):
        if isinstance(e, kind):
            return status
    return 400


def refusal(e: LoradbError) -> tuple[int, str, dict[str, str]]:
    """A refused request's status, one-line message and headers (Retry-After where retrying helps)."""
    headers = {}
    if isinstance(e, RateLimited):
        headers["Retry-After"] = str(max(1, math.ceil(e.retry_after)))
    if isinstance(e, Unavailable):
        headers["Retry-After"] = "1"
    return _status(e), in_terms(str(e), API_FIELDS), headers


def _error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def create_app(config: ServerConfig):
    """The ASGI application serving `config.db`: the FastAPI app (OpenAPI schema at
    /openapi.json; no /docs or /redoc, which would load code from a CDN) behind the request body cap."""
    LoraDB(config.db).close()  # refuse a bad path now, not at the first request
    # base names in records come from contributors: only the server's own --base models are opened
    handles = threading.local()

    # bumped when a request finds the database server gone: every thread's handle predates the
    # loss and is reopened at its next use (one failed request, not one per worker thread)
    connections = {"epoch": 0}

    def db() -> LoraDB:
        if hasattr(handles, "db") and (handles.epoch != connections["epoch"] or handles.db.index.connection_lost()):
            handles.db.close()
            del handles.db
        if not hasattr(handles, "db"):
            handles.epoch = connections["epoch"]
            handles.db = LoraDB(config.db, base_models=config.bases)
        return handles.db

    bearer = HTTPBearer(auto_error=False, description="a token made by `loradb token create` (the client sends LORADB_TOKEN)")

    limiter = RateLimiter(config.rate_limit) if config.rate_limit else None

    def admit(headers: dict[bytes, bytes], client: str, scope: Scope) -> Principal | None:
        """Who sends a request that needs `scope`, from its headers alone: authenticated,
        rate-limited and allowed, or LoradbError (401, 403, 429). Run by the Gate before any
        byte of the body is received, so an unauthenticated body is never read or parsed."""
        kind, _, secret = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        secret = secret.strip() if kind.lower() == "bearer" else ""
        if scope is Scope.READ and config.public_read and not secret:
            if limiter:
                limiter.take(f"address:{client}")
            return None
        try:
            principal = authenticate(db(), secret)
        except Exception as e:
            if not lost_connection(e):
                raise
            connections["epoch"] += 1  # as the routes' handler does: every thread reopens its handle
            raise Unavailable("the database server is unreachable right now; retry shortly") from None
        if limiter:
            limiter.take(f"token:{principal.token_id}")
        principal.require(scope)
        return principal

    def needs(scope: Scope):
        def check(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal | None:
            # the Gate admitted the request before its body arrived (`credentials` only declares
            # the bearer scheme in the OpenAPI schema)
            return request.state.principal
        check.loradb_scope = scope  # type: ignore[attr-defined]  # read by the Gate
        return check

    app = FastAPI(title="loradb", version=_version(), description="A shared database of LoRA adapters: contribute adapters "
                  "with the representation of their training data; retrieve and merge them for new data. Raw data never "
                  "reaches the server.", responses=ERROR_RESPONSES,
                  # FastAPI's /docs and /redoc load Swagger UI and Redoc from a CDN, unpinned, into the tab
                  # that holds the token: not served. The schema stays at /openapi.json for any viewer.
                  docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None, **_no_telemetry())

    @app.exception_handler(LoradbError)
    async def _loradb_error(request: Request, e: LoradbError):
        # an abstained compose sends its fit block: the client needs it to say why (and to offer force)
        extra = {"fit": finite_or_none(e.fit)} if isinstance(e, Abstained) else {}
        status, message, headers = refusal(e)
        response = _error(status, message, **extra)
        response.headers.update(headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        return _error(422, _validation_message(e.errors(), "the request body"))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException):
        response = _error(e.status_code, str(e.detail))
        response.headers.update(e.headers or {})
        if e.status_code == 405:  # Starlette lists only the first matching route's methods; a path has several
            response.headers["Allow"] = ", ".join(sorted({m for r in app.routes if isinstance(r, APIRoute)
                                                          and r.path_regex.match(request.url.path) for m in r.methods or ()}))
        return response

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception):  # a loradb bug: logged in full, reported in one line
        if lost_connection(e):  # the database server went away mid-request: not a bug, and worth a retry
            connections["epoch"] += 1
            log.warning("database connection lost on %s %s: %s", request.method, request.url.path, str(e).strip())
            return await _loradb_error(request, Unavailable("the database server is unreachable right now; retry shortly"))
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, f"internal server error ({type(e).__name__}); the server log has the details")

    @app.get(f"{API}/health")
    def health() -> dict:
        """Liveness only: answered without a token, so it tells nothing about the database."""
        return {"status": "ok"}

    @app.get(f"{API}/records")
    def list_records(offset: int = Query(0, ge=0, le=MAX_OFFSET), limit: int = Query(1000, ge=1, le=100_000),
                     who=Depends(needs(Scope.READ))) -> list[dict]:
        return [r.summary() for r in db().page(offset, limit)]

    @app.get(f"{API}/spaces")
    def spaces(who=Depends(needs(Scope.READ))) -> list[dict]:
        return db().spaces()

    @app.get(f"{API}/records/{{ref}}")
    def show(ref: str, who=Depends(needs(Scope.READ))) -> dict:
        return finite_or_none(db().get(ref).details())

    @app.get(f"{API}/names/{{name}}")
    def name_free(name: str, who: Principal = Depends(needs(Scope.WRITE))) -> dict:
        """Could this token add a record of this name now? 200 if so; 403 (the token) or 409 (the
        name is taken) if not. Clients ask before encoding the adapter's data, which takes minutes."""
        db().require_name_free(check_name(name))
        return {"name": name, "free": True}

    @app.post(f"{API}/records", status_code=201)
    def upload(adapter_config: UploadFile = File(description="adapter_config.json"),
               adapter_model: UploadFile = File(description="adapter_model.safetensors"),
               representation: str = Form(description="JSON: the representation of the adapter's training data"),
               name: str = Form(max_length=200), meta: str = Form("{}", description="JSON object of strings"),
               who: Principal = Depends(needs(Scope.WRITE))) -> dict:
        adapter_json = _json_field(adapter_config.file.read(MAX_CONFIG_BYTES + 1), "adapter_config", MAX_CONFIG_BYTES)
        meta_doc = _json_field(meta.encode(), "meta", MAX_CONFIG_BYTES)
        if len(meta_doc) > MAX_META_KEYS or not all(isinstance(v, (str, int, float)) for v in meta_doc.values()):
            raise LoradbError(f"meta must be an object of at most {MAX_META_KEYS} string values")
        rep = representation_from_doc(_representation_field(representation), max_dim=config.max_dim)
        with tempfile.TemporaryDirectory(prefix="loradb-upload-") as tmp:
            weights = Path(tmp) / "adapter_model.safetensors"
            with open(weights, "wb") as f:
                shutil.copyfileobj(adapter_model.file, f, 1 << 20)
            record = db().add_uploaded(adapter_json, weights, rep, name=name, meta=meta_doc, owner=who.name,
                                       bases=config.bases or None)
        log.info("%s added %s (%s)", who.name, record.name, record.id)
        return record.summary()

    @app.delete(f"{API}/records/{{ref}}")
    def delete(ref: str, who: Principal = Depends(needs(Scope.WRITE))) -> dict:
        record = db().remove(ref, by=who)
        log.info("%s removed %s (%s)", who.name, record.name, record.id)
        return record.summary()

    @app.get(f"{API}/records/{{ref}}/adapter", response_class=FileResponse,
             responses={200: {"content": {ARCHIVE_TYPE: {}}, "description": "the PEFT adapter directory as a tar"}})
    def download(ref: str, who=Depends(needs(Scope.READ))):
        tmp = Path(tempfile.mkdtemp(prefix="loradb-download-"))
        try:
            out = db().export(ref, tmp / "adapter")  # verifies the blob's sha256
            # the files every client accepts; a client writes the record's own file from the record it read
            archive = write_archive(tmp / "adapter.tar", {p.name: p for p in sorted(out.iterdir()) if p.name in ARCHIVE_FILES})
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return FileResponse(archive, media_type=ARCHIVE_TYPE, filename=f"{ref}.tar",
                            background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))

    def within_k(body: _Query, weights: dict | None = None) -> None:
        """Refuse more adapters than this server composes at once (before any work)."""
        asked = len(weights) if weights is not None else body.k
        if asked > config.max_k:
            raise OverLimit(f"{'weights names' if weights is not None else 'k asks for'} {asked} adapters; "
                            f"this server takes at most {config.max_k} per request")

    @app.post(f"{API}/search")
    def search(body: SearchRequest, who=Depends(needs(Scope.READ))) -> dict:
        within_k(body)
        rep = representation_from_doc(body.representation.as_doc(), max_dim=config.max_dim)
        result = db().search(target=rep, progress=False, **_query_args(body))
        return finite_or_none(_result_doc(result))

    @app.post(f"{API}/compose", response_class=FileResponse,
              responses={200: {"content": {ARCHIVE_TYPE: {}}, "description": "the composed PEFT adapter (with "
                               "loradb_compose.json: hits, weights, compression) as a tar"}})
    def compose(body: ComposeRequest, who=Depends(needs(Scope.READ))):
        if body.method in FEW_SHOT:
            raise LoradbError(f"method {body.method} learns weights from labeled examples, which stay with the client: "
                              "learn them there and send weights")
        if (body.representation is None) == (body.weights is None):
            raise LoradbError("give exactly one of representation or weights")
        within_k(body, body.weights)
        shape: dict[str, Any] = {"spec": body.merge_spec(), "max_work_bytes": config.max_compose_bytes}
        tmp = Path(tempfile.mkdtemp(prefix="loradb-compose-"))
        try:
            if body.representation is None:  # then weights were given
                db().compose(tmp / "adapter", weights=body.weights, progress=False, scale=body.scale, **shape)
            else:
                rep = representation_from_doc(body.representation.as_doc(), max_dim=config.max_dim)
                db().compose(tmp / "adapter", target=rep, progress=False, force=body.force, **shape, **_query_args(body))
            out = tmp / "adapter"
            archive = write_archive(tmp / "composed.tar", {p.name: p for p in sorted(out.iterdir()) if p.name in ARCHIVE_FILES})
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return FileResponse(archive, media_type=ARCHIVE_TYPE, filename="composed.tar",
                            background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))

    @app.get(f"{API}/check")
    def check(who=Depends(needs(Scope.ADMIN))) -> dict:
        return db().check().to_dict()

    add_catalogue(app, db, needs, config.max_k)

    # a JSON request's largest legitimate body: a representation (z, and var and task_z beside
    # it, each of --max-dim numbers of up to 32 characters, and its task's prompts or
    # instruction, which the schema bounds at TASK_BYTES) and --max-k weights, with room to spare
    json_bytes = min(config.max_upload_bytes, 3 * 32 * config.max_dim + TASK_BYTES + 512 * config.max_k + (64 << 10))
    return Gate(app, admit, refusal, upload=("POST", f"{API}/records"), upload_bytes=config.max_upload_bytes, json_bytes=json_bytes)


def _no_telemetry() -> dict:
    """FastAPI >= 0.165 instruments requests with OpenTelemetry when a provider is configured
    (and exports over OTLP if FASTAPI_OTEL_AUTO_CONFIGURE=true): a privacy-bound service
    reports nothing about its requests anywhere, so it is switched off where it exists."""
    import inspect

    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False,
                          "auto_configure": False}}


def _query_args(body: _Query) -> dict:
    return {"k": body.k, "method": body.method, "temperature": body.temperature, "l1": body.l1, "key": body.key,
            "space": body.space, "scale": body.scale}


def _result_doc(result) -> dict:
    """A SearchResult with each hit's record summary, for the client to print."""
    doc = result.to_dict()
    for hit, row in zip(result.hits, doc["results"]):
        row["record"] = hit.record.summary()
    return doc


def _representation_field(text: str) -> dict:
    """The upload's representation form field, held to the same schema as search's body."""
    from pydantic import ValidationError

    try:
        return RepresentationDoc.model_validate_json(text).as_doc()
    except ValidationError as e:
        raise LoradbError(_validation_message(e.errors(), "representation", prefix="representation")) from None


def _validation_message(errors: Sequence, what: str, prefix: str = "") -> str:
    """A pydantic validation failure in one line: where the first error is, and how many more."""
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"{what} is not valid JSON"
    parts = [str(x) for x in first.get("loc", ()) if x != "body"]
    where = ".".join([prefix, *parts] if prefix else parts)
    return f"{where}: {first.get('msg')}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")


def _json_field(raw: bytes, what: str, limit: int | None):
    if limit is not None and len(raw) > limit:
        raise LoradbError(f"{what} is larger than {limit} bytes")
    try:
        doc = jsondoc.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise LoradbError(f"{what} is not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise LoradbError(f"{what} must be a JSON object")
    return doc

@functools.lru_cache(maxsize=1)
def _version() -> str:  # importlib.metadata scans every installed distribution: once is enough
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("loradb")
    except PackageNotFoundError:
        return "unknown"
