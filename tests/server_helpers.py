"""Starting a real `loradb serve` (or `loradb route`) on 127.0.0.1 for tests and benchmarks, and
stopping it by PID."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path


def start_server(db: Path | str, *args, log: Path, env: dict | None = None, port: int = 0, command: str = "serve",
                 ready: str = "/v1/health", timeout: float = 30) -> tuple[subprocess.Popen, str]:
    """Launch `loradb COMMAND DB` (serve, or route) on loopback (a free port unless `port` is
    given); returns (process, base URL) once `ready` answers 200."""
    import httpx

    log_file = open(log, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "loradb.cli", command, str(db), "--host", "127.0.0.1", "--port", str(port),
                             *map(str, args)], stdout=subprocess.PIPE, stderr=log_file, env=env or os.environ.copy())
    log_file.close()
    line = proc.stdout.readline().decode()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}; log: {Path(log).read_text()[-2000:]}")
    url = match.group(0)
    # what the server writes to stdout after its URL (uvicorn's access log at --log-level info)
    # goes to the log too: an undrained pipe would fill and stall the server
    threading.Thread(target=_drain, args=(proc.stdout, log), daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}{ready}", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"server at {url} never became healthy; log: {Path(log).read_text()[-2000:]}")
        time.sleep(0.05)


def _drain(stream, log: Path) -> None:
    try:
        with open(log, "ab") as out:
            for line in iter(stream.readline, b""):
                out.write(line)
                out.flush()
    except (ValueError, OSError):  # the pipe was closed by stop_server
        pass


def stop_server(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.stdout:
        proc.stdout.close()


@contextmanager
def running_server(db: Path, *args, log: Path, env: dict | None = None):
    proc, url = start_server(db, *args, log=log, env=env)
    try:
        yield url
    finally:
        stop_server(proc)
