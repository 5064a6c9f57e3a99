"""`loradb serve`: the shared database over HTTP (see app.py for the API)."""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Sequence
from pathlib import Path


def serve(db: str | Path, *, host: str = "127.0.0.1", port: int = 8000, bases: Sequence[str] = (), max_upload_mb: float = 256,
          max_dim: int = 16384, public_read: bool = False, max_k: int = 100, max_compose_mb: float = 1024,
          rate_limit: str | None = None, trusted_proxies: Sequence[str] = (), log_level: str = "warning") -> None:
    """Serve a database until interrupted.

    Args:
        db: the database directory.
        host / port: where to listen (port 0: any free port; the chosen URL is printed first).
        bases: base model directories whose adapters are accepted, checked layer by layer
            (default: any base; the adapter must then agree with its representation and peers).
        max_upload_mb: the largest request body accepted.
        max_dim: the largest representation dimension accepted.
        public_read: allow list / show / search / compose / download without a token.
        max_k: the most adapters one search or compose may retrieve (k) or name (weights).
        max_compose_mb: working memory one compose may use; larger ones are refused (413)
            before any dense delta is formed.
        rate_limit: "N/s" or "N/min" per token (anonymous public reads: per client address);
            beyond it requests get 429 with Retry-After. None: unlimited.
        trusted_proxies: addresses of reverse proxies whose X-Forwarded-* headers are believed;
            from anyone else they are ignored (uvicorn would trust them from 127.0.0.1 by default,
            which let a local client choose its own address and so its rate-limit bucket).
    """
    import uvicorn

    from loradb.lora.base import load_base
    from loradb.errors import LoradbError
    from loradb.service.app import ServerConfig, create_app
    from loradb.service.limits import parse_rate

    if not 0 < max_upload_mb <= 1 << 20:
        raise LoradbError(f"`max_upload_mb` must be positive, got {max_upload_mb}")
    if max_dim < 1:
        raise LoradbError(f"`max_dim` must be at least 1, got {max_dim}")
    if max_k < 1:
        raise LoradbError(f"`max_k` must be at least 1, got {max_k}")
    if not max_compose_mb > 0:
        raise LoradbError(f"`max_compose_mb` must be positive, got {max_compose_mb}")
    for proxy in trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise LoradbError(f"`trusted_proxies`: {proxy!r} is not an IP address or network") from None
    accepted = {b.fingerprint: b for b in (load_base(path) for path in bases)}
    config = ServerConfig(db=str(db), bases=accepted, max_upload_bytes=int(max_upload_mb * (1 << 20)), max_dim=max_dim,
                          public_read=public_read, max_k=max_k, max_compose_bytes=int(max_compose_mb * (1 << 20)),
                          rate_limit=parse_rate(rate_limit) if rate_limit is not None else None)
    app = create_app(config)
    # requests run in parallel threads; a multi-threaded BLAS inside each one only spins
    # on the same cores (measured: server CPU per search 10 ms -> 4.4 ms at 3,000 records)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as e:
        raise LoradbError(f"cannot listen on {host}:{port} ({e})") from None
    # accepted connections inherit this; asyncio sets it only on sockets made with proto=IPPROTO_TCP,
    # and without it every keep-alive response waits ~40 ms for a delayed ACK
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"loradb serving {db} at http://{shown}:{bound} (catalogue at /, OpenAPI schema at /openapi.json)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print("loradb: listening beyond this machine; put TLS in front of it (tokens travel in a header)", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=log_level in ("info", "debug"),
                                  proxy_headers=bool(trusted_proxies),
                                  forwarded_allow_ips=list(trusted_proxies) or None)).run(sockets=[sock])
