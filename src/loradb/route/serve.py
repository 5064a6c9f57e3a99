"""`loradb route`: start (or reach) the engine, then serve the router until interrupted."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
from pathlib import Path

from loradb.errors import LoradbError
from loradb.route.engine import EngineLimits


def route(db: str, *, base: str, engine_url: str | None = None, start_engine: bool = False, engine_port: int = 8100,
          engine_python: str | None = None, host: str = "127.0.0.1", port: int = 8200, max_loras: int = 4,
          max_lora_rank: int = 64, state: str | Path | None = None, log_level: str = "warning") -> None:
    """Serve the router for database `db` in front of a vLLM engine until interrupted.

    Args:
        db: a database directory or postgresql:// URL holding adapters for `base`.
        base: the base model directory the engine serves (or a packaged name, resolved by the CLI).
        engine_url: a running vLLM server (started with --enable-lora, the same max_loras and
            max_lora_rank, and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True); or
        start_engine: start one here on 127.0.0.1:engine_port, stopped when the router stops.
        max_loras / max_lora_rank: the engine's limits; compositions of a larger stacked rank
            are compressed to max_lora_rank, and at most max_loras adapters stay loaded.
        state: where compositions and named adaptations are kept (default: DB's folder
            `route/` for a directory database, else ./loradb-route).
    """
    import uvicorn

    from loradb.route.app import Router, create_app
    from loradb.route.launch import start_engine as launch

    if (engine_url is None) == (not start_engine):
        raise LoradbError("give the engine: `engine_url` of a running vLLM server, or `start_engine`")
    limits = EngineLimits(max_loras, max_lora_rank)
    state_dir = Path(state) if state is not None else (Path(db) / "route" if Path(db).is_dir() else Path("loradb-route"))
    try:
        sock = socket.create_server((host, port))
    except OSError as e:
        raise LoradbError(f"cannot listen on {host}:{port} ({e})") from None
    # SIGTERM before uvicorn takes over its signals (the engine takes a minute to start) unwinds
    # the stack below like Ctrl-C, so a started engine is stopped rather than left running
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with contextlib.ExitStack() as stack:
        if start_engine:
            print(f"starting vLLM on 127.0.0.1:{engine_port} for {base} (about a minute; log in {state_dir / 'engine.log'})",
                  file=sys.stderr, flush=True)
            started = launch(base, port=engine_port, limits=limits, log=state_dir / "engine.log", python=engine_python)
            stack.callback(started.stop)
            engine_url = started.url
        assert engine_url is not None
        router = Router(db, engine_url=engine_url, base=base, limits=limits, state=state_dir)
        bound = sock.getsockname()[1]
        print(f"loradb routing {db} at http://{host}:{bound}/v1 in front of vLLM at {engine_url} "
              f"(model: loradb:auto, an adaptation, a record, or the base)", flush=True)
        uvicorn.Server(uvicorn.Config(create_app(router), log_level=log_level,
                                      access_log=log_level in ("info", "debug"))).run(sockets=[sock])
