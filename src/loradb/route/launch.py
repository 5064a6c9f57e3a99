"""Start and stop a vLLM engine for `loradb route`, from the engine's own environment.

vLLM pins its own transformers and torch, so it lives in a separate virtual environment
(`make engine` creates `.venv-engine` from engine/requirements.txt) and runs as its own
process, as it is deployed anyway. The engine listens on 127.0.0.1 only, serves the
router's base model in float32 (vLLM's CPU default, bfloat16, would not generate what
loradb and PEFT do), accepts adapters at run time, and is stopped by its PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from loradb.errors import LoradbError
from loradb.route.engine import EngineLimits

ENGINE_PYTHON_ENV = "LORADB_ENGINE_PYTHON"
DEFAULT_ENGINE_VENV = ".venv-engine"
READY_TIMEOUT_S = 300.0
MAX_MODEL_LEN = 2048
KV_CACHE_GIB = 1


def engine_python(given: str | None = None) -> Path:
    """The Python of the engine's environment: `given`, else $LORADB_ENGINE_PYTHON, else
    .venv-engine/bin/python under the current directory or loradb's checkout (an editable
    install); refused when it has no vLLM."""
    value = given or os.environ.get(ENGINE_PYTHON_ENV)
    if value is None:
        checkout = Path(__file__).resolve().parents[3]  # src/loradb/route/launch.py -> the checkout
        found = [d / DEFAULT_ENGINE_VENV / "bin" / "python" for d in (Path.cwd(), checkout)]
        value = str(next((p for p in found if p.is_file()), found[0]))
    path = Path(value)
    if not path.is_file():
        raise LoradbError(f"no engine environment at {path}: run `make engine` in loradb's checkout (it creates "
                          f"{DEFAULT_ENGINE_VENV} with vLLM), or name its python with --engine-python / {ENGINE_PYTHON_ENV}")
    check = subprocess.run([str(path), "-c", "import importlib.util as u; print(u.find_spec('vllm') is not None)"],
                           check=False, capture_output=True, text=True, timeout=60)
    if check.stdout.strip() != "True":
        raise LoradbError(f"{path} has no vLLM installed; run `make engine`")
    return path


@dataclass
class StartedEngine:
    url: str
    log: Path
    process: subprocess.Popen

    @property
    def pid(self) -> int:  # also its process group's id: it was started in a session of its own
        return self.process.pid

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the engine's process group (its engine-core workers too), SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.pid, signal.SIGTERM)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass


def start_engine(base: str | os.PathLike, *, port: int, limits: EngineLimits, log: Path, python: str | None = None,
                 timeout: float = READY_TIMEOUT_S, extra_args: tuple[str, ...] = ()) -> StartedEngine:
    """A vLLM server on 127.0.0.1:`port` for the model directory `base`, ready to serve
    (`extra_args`: more of vLLM's own flags)."""
    exe = engine_python(python)
    args = [str(exe), "-W", "ignore::DeprecationWarning", "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(base), "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
            "--enable-lora", "--max-loras", str(limits.max_loras), "--max-lora-rank", str(limits.max_lora_rank),
            "--max-model-len", str(MAX_MODEL_LEN), *extra_args]
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_GIB),
           "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    env.pop("PYTHONPATH", None)  # the engine's environment only, never loradb's
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    started = StartedEngine(url=f"http://127.0.0.1:{port}", log=log, process=process)
    try:
        _wait_ready(started, timeout)
    except BaseException:  # a failed start, or the caller interrupted: no engine is left behind
        started.stop()
        raise
    return started


def _wait_ready(started: StartedEngine, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if started.process.poll() is not None:
            raise LoradbError(f"the vLLM engine exited with code {started.process.returncode} while starting; its log "
                              f"{started.log} ends:\n{_tail(started.log)}")
        try:
            if httpx.get(f"{started.url}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise LoradbError(f"the vLLM engine did not answer within {timeout:.0f} s; its log {started.log} ends:\n"
                      f"{_tail(started.log)}")


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


if __name__ == "__main__":  # pragma: no cover - a manual aid: python -m loradb.route.launch BASE PORT
    engine = start_engine(sys.argv[1], port=int(sys.argv[2]), limits=EngineLimits(4, 64), log=Path("engine.log"))
    print(f"vLLM at {engine.url}, pid {engine.pid}")
