"""The long fuzz run of the HTTP API: schemathesis generates requests from the server's own
OpenAPI schema (coverage, fuzzing and stateful phases) against a real `loradb serve` on
127.0.0.1, once with each of a read, a write and an admin token. Requests and 5xx are
counted from the server's access log; every response is checked against the schema
(status, content type, headers, body), unsupported methods must get 405 with the right
Allow, and `loradb check` must be clean afterwards. Then, with the write token, uploads of
damaged adapter files (tests/upload_fuzz.py: the schema says only "a file", so schemathesis
never reaches the safetensors and config parsers). The bounded versions run in the tests
(tests/test_fuzz.py, tests/test_crafted.py).

Run: python benchmarks/fuzz_server.py [--examples 200] [--minutes-per-scope 10] [--uploads 3000] [--out benchmarks/reports/fuzz-server]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fuzzing import fuzz  # noqa: E402
from runinfo import write_run_info  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200, help="examples per operation and phase (default 200)")
    parser.add_argument("--minutes-per-scope", type=float, default=10, help="time budget per token scope (default 10)")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--uploads", type=int, default=3000, help="uploads of damaged adapter files after the schema's "
                        "requests (tests/upload_fuzz.py; default 3000)")
    parser.add_argument("--out", default="fuzz-server-report")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="loradb-fuzz-") as tmp:
        result = fuzz(Path(tmp), max_examples=args.examples, seed=args.seed, max_seconds_per_scope=60 * args.minutes_per_scope,
                      uploads=args.uploads,
                      log=lambda m: print(m, file=sys.stderr, flush=True))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for f in Path(tmp).glob("schemathesis-*.txt"):  # the fuzzer's own report of any failure
            (out / f.name).write_text(f.read_text())
    result["server_errors"] = [list(s) for s in result["server_errors"]]
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    write_run_info(out, started)
    print(f"{result['requests']} requests in {result['seconds']:.0f} s; 5xx: {len(result['server_errors'])}; statuses "
          f"{result['by_status']}; schemathesis exit codes "
          f"{ {s: v['exit_code'] for s, v in result['verdicts'].items()} }; check clean: {result['check_clean']}")
    if result.get("uploads"):
        print(f"uploads of damaged adapter files: {result['uploads']['requests']}, problems "
              f"{len(result['uploads']['problems'])}, statuses by damage {result['uploads']['statuses']}")
    if (result["server_errors"] or any(v["exit_code"] for v in result["verdicts"].values()) or not result["check_clean"]
            or (result.get("uploads") or {}).get("problems")):
        sys.exit(1)


if __name__ == "__main__":
    main()
