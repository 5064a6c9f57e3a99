"""Commands of the shared service: serve, and the access tokens it checks."""

from __future__ import annotations

import sys

from loradb.cli.common import base_dir, command, local_only, open_local, print_json


def _serve_flags(p) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one, printed at start)")
    p.add_argument("--base", action="append", default=[], metavar="DIR", type=base_dir,
                   help="accept only adapters for this base model, checked layer by layer (repeatable; default any)")
    p.add_argument("--max-upload-mb", type=float, default=256, help="largest request body in MiB (default 256)")
    p.add_argument("--max-dim", type=int, default=16384, help="largest representation dimension (default 16384)")
    p.add_argument("--public-read", action="store_true", help="allow reads (list, search, compose, download) without a token")
    p.add_argument("--max-k", type=int, default=100, help="most adapters one search or compose may use (default 100)")
    p.add_argument("--max-compose-mb", type=float, default=1024,
                   help="working memory one compose may use, in MiB; larger ones are refused before work (default 1024)")
    p.add_argument("--rate-limit", metavar="N/s", help="requests per token (anonymous reads: per address), e.g. 20/s or "
                   "600/min; beyond it 429 with Retry-After (default unlimited)")
    p.add_argument("--trusted-proxy", action="append", default=[], metavar="IP",
                   help="a reverse proxy whose X-Forwarded-For / X-Forwarded-Proto headers are believed (repeatable; "
                   "default none: the client address is the connection's, so a header cannot change it)")
    p.add_argument("--log-level", default="warning", choices=("warning", "info", "debug"), help="server log (info logs requests)")


@command("serve", "serve the database over HTTP (contribute, search, compose, download) and its catalogue in the browser at /", flags=_serve_flags, url=False)
def cmd_serve(args) -> int:
    from loradb.service.serve import serve

    local_only(args.db, "serve")
    serve(args.db, host=args.host, port=args.port, bases=args.base, max_upload_mb=args.max_upload_mb, max_dim=args.max_dim,
          public_read=args.public_read, max_k=args.max_k, max_compose_mb=args.max_compose_mb,
          rate_limit=args.rate_limit, trusted_proxies=args.trusted_proxy, log_level=args.log_level)
    return 0


def _route_flags(p) -> None:
    p.add_argument("--base", required=True, type=base_dir, metavar="DIR",
                   help="the base model the engine serves: a directory, or a packaged name (smollm2)")
    engine = p.add_mutually_exclusive_group(required=True)
    engine.add_argument("--engine", metavar="URL", help="a running vLLM server (--enable-lora, runtime LoRA updating on)")
    engine.add_argument("--start-engine", action="store_true", help="start vLLM here from its environment (make engine); "
                        "stopped with the router")
    p.add_argument("--engine-port", type=int, default=8100, help="port of the started engine (default 8100)")
    p.add_argument("--engine-python", metavar="PATH", help="python of the engine's environment (default "
                   "$LORADB_ENGINE_PYTHON, else .venv-engine/bin/python)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8200, help="port (default 8200)")
    p.add_argument("--max-loras", type=int, default=4, help="adapters the engine holds at once (default 4; an external "
                   "engine's --max-loras)")
    p.add_argument("--max-lora-rank", type=int, default=64, help="the engine's largest adapter rank; larger compositions "
                   "are compressed to it (default 64)")
    p.add_argument("--state", metavar="DIR", help="compositions and named adaptations (default: DB/route for a "
                   "directory database, else ./loradb-route); routers sharing one share their named adaptations")
    p.add_argument("--log-level", default="warning", choices=("warning", "info", "debug"), help="router log")


@command("route", "an OpenAI-compatible endpoint in front of vLLM that chooses and composes the adapter for each "
         "request (model: loradb:auto, an adaptation, a record)", flags=_route_flags, url=False)
def cmd_route(args) -> int:
    from loradb.route.serve import route

    local_only(args.db, "route")
    route(args.db, base=args.base, engine_url=args.engine, start_engine=args.start_engine, engine_port=args.engine_port,
          engine_python=args.engine_python, host=args.host, port=args.port, max_loras=args.max_loras,
          max_lora_rank=args.max_lora_rank, state=args.state, log_level=args.log_level)
    return 0


def _token_create_flags(p) -> None:
    p.add_argument("--name", required=True, help="who holds it; records they contribute are owned by this name")
    p.add_argument("--scope", required=True, choices=("read", "write", "admin"),
                   help="read: list/search/compose/download; write: + upload, delete own, make and remove "
                   "`loradb route` adaptations; admin: + delete any")


@command("create", "make a token; prints it once", group="token", url=False, json_flag=True, flags=_token_create_flags)
def cmd_token_create(args) -> int:
    from loradb.db.access import create_token

    with open_local(args.db, "token create") as db:
        secret, row = create_token(db, args.name, args.scope)
    if args.json:
        print_json({**row, "token": secret})
    else:
        print(secret)
        print(f"token {row['id']} for {row['name']} with scope {row['scope']}: shown this once, stored only hashed; "
              "clients send it from LORADB_TOKEN", file=sys.stderr)
    return 0


@command("list", "list tokens (never their secrets)", group="token", url=False, json_flag=True)
def cmd_token_list(args) -> int:
    from loradb.db.access import list_tokens

    with open_local(args.db, "token list") as db:
        rows = list_tokens(db)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no tokens")
    for r in rows:
        print(f"{r['id']}  {r['name']:<24} {r['scope']:<6} created {r['created'][:19]}"
              + (f"  revoked {r['revoked'][:19]}" if r["revoked"] else ""))
    return 0


@command("revoke", "revoke tokens by id or name", group="token", url=False,
         flags=lambda p: p.add_argument("ref", help="token id or name"))
def cmd_token_revoke(args) -> int:
    from loradb.db.access import revoke_tokens

    with open_local(args.db, "token revoke") as db:
        rows = revoke_tokens(db, args.ref)
    for r in rows:
        print(f"revoked token {r['id']} of {r['name']} ({r['scope']})")
    return 0
