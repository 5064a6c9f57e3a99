"""The browser catalogue: a static page at `/` (vanilla JS, shipped in the package, no build
step) and the four JSON reads it needs beyond the API: a filtered page of records, a record's
neighbours, a space's 2-D map, and the menus of weighting methods and retrieval keys.

The page holds no data of its own: every read goes through the API with the token the user
typed (kept in the tab's session storage), so the catalogue obeys the same token rules as
any client, and `--public-read` opens it exactly as it opens the API. Records are rendered
with textContent only, never as markup, and the page is served with a policy that runs no
script but its own.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

from fastapi import Depends, FastAPI, Query
from fastapi.responses import Response

from loradb.db import catalogue
from loradb.db.access import Scope
from loradb.errors import LoradbError, NotFound, OverLimit
from loradb.retrieval.keys import KEYS
from loradb.service.wire import API
from loradb.weighting.registry import DEFAULT_METHOD, METHODS, ZERO_SHOT

STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8", "icon.svg": "image/svg+xml"}
# the page's own script and style only: a name or metadata value that slipped through as
# markup still could not run anything or load anything from elsewhere
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
MAX_TEXT = 200


def _asset(name: str) -> bytes:
    return files("loradb.service").joinpath("catalogue").joinpath(name).read_bytes()


def _text(value: str, what: str) -> str:
    """A string from the request: bounded, and without NUL (PostgreSQL refuses it in text)."""
    if len(value) > MAX_TEXT or "\x00" in value:
        raise LoradbError(f"{what} must be at most {MAX_TEXT} characters, without NUL")
    return value


def _filter(value: str | None, what: str) -> str | None:
    """An optional filter from the query string (absent: no filter), checked as _text."""
    return None if value is None else _text(value, what)


def add_catalogue(app: FastAPI, db: Callable, needs: Callable, max_k: int = 100) -> None:
    """Mount the page and its reads on `app`; `db()` is the request thread's database handle,
    `needs(scope)` the API's token check, `max_k` the server's --max-k (neighbours asked at once)."""
    headers = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
               "Cache-Control": "no-cache"}

    @app.get("/", include_in_schema=False)
    def page() -> Response:  # the page itself holds no records: it needs no token
        return Response(_asset("index.html"), media_type="text/html; charset=utf-8", headers=headers)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:  # asked for by every browser whatever the page links; the same icon
        return Response(_asset("icon.svg"), media_type=STATIC["icon.svg"], headers=headers)

    @app.get("/catalogue/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name not in STATIC:
            raise NotFound(f"no catalogue file {name!r}")
        return Response(_asset(name), media_type=STATIC[name], headers=headers)

    @app.get(f"{API}/catalogue/records")
    def records(offset: int = Query(0, ge=0, le=1 << 40), limit: int = Query(50, ge=1, le=1000),
                base: str | None = Query(None, description="base model name or fingerprint"),
                space: str | None = Query(None, description="representation space id"),
                meta: str | None = Query(None, description="KEY=VALUE: records whose metadata has it"),
                q: str | None = Query(None, description="text in the name, owner or metadata, or an id prefix"),
                who=Depends(needs(Scope.READ))) -> dict:
        """The catalogue's table: records newest first, filtered, with the total that match."""
        return catalogue.browse(db(), base=_filter(base, "base"), space=_filter(space, "space"),
                                meta=_filter(meta, "meta"), text=_filter(q, "q"), offset=offset, limit=limit)

    @app.get(f"{API}/records/{{ref}}/neighbours")
    def neighbours(ref: str, k: int = Query(10, ge=1, le=100), who=Depends(needs(Scope.READ))) -> list[dict]:
        """The k records nearest to this one in its space (squared L2 between their z)."""
        if k > max_k:
            raise OverLimit(f"k is {k}; this server takes at most {max_k} per request (--max-k)")
        return catalogue.neighbours(db(), _text(ref, "ref"), k)

    @app.get(f"{API}/spaces/{{space}}/map")
    def space_map(space: str, colour: str | None = Query(None, description="metadata key to colour by"),
                  sample: int = Query(catalogue.MAP_SAMPLE, ge=1, le=catalogue.MAP_SAMPLE_MAX,
                                      description=f"prototypes to draw, rounded up to one of {catalogue.SAMPLE_STEPS}"),
                  who=Depends(needs(Scope.READ))) -> dict:
        """The space's prototypes projected to 2-D by PCA (a seeded sample of at most `sample`)."""
        return catalogue.space_map(db(), _text(space, "space"), colour=_filter(colour, "colour"), sample=sample)

    @app.get(f"{API}/methods")
    def methods() -> dict:  # the library's own names, no records: open to all, like /health
        """The zero-shot weighting methods and the retrieval keys a search or compose takes (the page's menus)."""
        return {"default": DEFAULT_METHOD, "methods": [{"name": m, "help": METHODS[m].help} for m in ZERO_SHOT],
                "keys": [{"name": k.name, "help": k.help} for k in KEYS.values()]}
