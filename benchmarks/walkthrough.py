"""The README's five-minute walk-through, run as written, with what its last command measures.

The first bash block under "Five-minute walk-through" in README.md is run with bash in an
empty folder (the installed `loradb` first on PATH), timed, and its output kept; then its
closing `loradb score` is run again with --json, so the figures the README quotes (accuracy
and macro-F1 of the base model and of the composed adapter on the tweets) are read from
results.json rather than from a terminal.

Run: python benchmarks/walkthrough.py [--out benchmarks/reports/walkthrough]   (about 5 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runinfo import write_run_info

ROOT = Path(__file__).resolve().parent.parent


def walkthrough_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Five-minute walk-through", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    if block is None:
        raise SystemExit("README.md has no bash block under 'Five-minute walk-through'")
    return block.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="walkthrough-report", help="report directory (default walkthrough-report)")
    args = parser.parse_args()
    started = time.perf_counter()
    block = walkthrough_block()
    score_line = [line for line in block.splitlines() if line.startswith("loradb score ")][-1]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with tempfile.TemporaryDirectory(prefix="loradb-walkthrough-") as folder:
        ran = time.perf_counter()
        done = subprocess.run(["bash", "-e", "-c", block], cwd=folder, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - ran
        if done.returncode != 0:
            raise SystemExit(f"the walk-through failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        scored = subprocess.run([*shlex.split(score_line), "--json"], cwd=folder, env=env, capture_output=True, text=True,
                                check=True)
    report = json.loads(scored.stdout)
    base, adapted = report["rows"][0]["scores"], report["rows"][1]["scores"]
    results = {"walkthrough_seconds": round(seconds, 1), "score_command": score_line, "score": report,
               "accuracy_gain": adapted["accuracy"] - base["accuracy"], "macro_f1_gain": adapted["macro_f1"] - base["macro_f1"],
               "output": done.stdout}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "report.md").write_text(
        "# The README walk-through, run as written\n\n"
        f"All of it took {seconds:.0f} s. Its last command, `{score_line}`:\n\n"
        f"| model | accuracy | macro-F1 |\n|---|---|---|\n"
        + "".join(f"| {r['name']} | {r['scores']['accuracy']:.4f} | {r['scores']['macro_f1']:.4f} |\n" for r in report["rows"])
        + f"\non {report['examples']} labeled tweets. Its output in full is in results.json (`output`).\n")
    write_run_info(out, started)
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
