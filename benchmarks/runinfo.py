"""What every committed report carries besides its numbers: the command that made it, the
machine it ran on, and how long it took (RUN.md and run.json beside results.json)."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path


def machine() -> dict:
    """CPU model, cores, memory, OS and the versions that decide the numbers."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else platform.processor()
    mem = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), None) if Path("/proc/meminfo").is_file() else None
    versions = {}
    for pkg in ("loradb", "torch", "transformers", "peft", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mib": mem, "os": platform.platform(),
            "python": platform.python_version(), "versions": versions}


def write_run_info(out: Path, started: float, *, note: str = "") -> dict:
    """RUN.md and run.json in `out`: the command line as run, the machine, the wall time."""
    info = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "machine": machine(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "wall_seconds": round(time.perf_counter() - started, 1)}
    (out / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    m = info["machine"]
    (out / "RUN.md").write_text("\n".join([
        "# How this report was made", "",
        f"Command: `{info['command']}`", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mib']} MiB, {m['os']}, Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v), "",
        f"Finished {info['finished']} after {info['wall_seconds']:.0f} s wall-clock.", "",
        *([note, ""] if note else [])]))
    return info


def write_results(out: Path | None, results: dict, started: float) -> None:
    """results.json, RUN.md and run.json in `out` (nothing when no --out was given)."""
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_run_info(out, started)
