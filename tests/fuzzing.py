"""A property-based fuzz run of the HTTP API from its own OpenAPI schema (schemathesis),
against a real `loradb serve` on 127.0.0.1 with read, write and admin tokens.

Shared by the bounded test (tests/test_fuzz.py) and the long run (benchmarks/fuzz_server.py).
Requests and 5xx are counted from the server's own access log, not from the fuzzer's
summary, so the figures hold whatever the fuzzer reports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from models import make_adapter, make_bert
from server_helpers import running_server

# every response must: not be a 5xx, have a status, content type, headers and body the schema
# declares, refuse unsupported methods with 405 + Allow
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance,unsupported_method,allow_header_conformance")
SCOPES = ("read", "write", "admin")
_ACCESS = re.compile(r'"(GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS|TRACE|CONNECT|[A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3})')


def seeded_database(root: Path) -> tuple[Path, dict]:
    """A database with two records on a tiny BERT and one token per scope."""
    from loradb.db.access import create_token
    from loradb.db.database import LoraDB

    base = make_bert(root / "bert")
    db_dir = root / "db"
    with LoraDB.init(db_dir) as db:
        for i, (name, texts) in enumerate((("alpha-rec", ["bake the bread", "boil the pasta"]),
                                           ("beta-rec", ["the bank rate", "shares and funds"]))):
            (root / f"{name}.txt").write_text("\n".join(texts) + "\n")
            db.add(make_adapter(base, root / name, seed=i), data=root / f"{name}.txt", name=name, base=base, progress=False)
        tokens = {scope: create_token(db, f"fuzz-{scope}", scope)[0] for scope in SCOPES}
    return db_dir, tokens


def fuzz(root: Path, *, max_examples: int, seed: int, max_seconds_per_scope: float, uploads: int = 0, log=print) -> dict:
    """Fuzz every operation once per token scope, then (`uploads`) as many uploads of damaged
    adapter files (tests/upload_fuzz.py) with the write token; returns the counts, the
    fuzzer's verdicts and whether `loradb check` is clean afterwards."""
    import httpx
    from upload_fuzz import fuzz_uploads

    from loradb.retrieval.represent import represent_texts
    from loradb.service.wire import representation_doc

    from loradb.db.database import LoraDB

    root.mkdir(parents=True, exist_ok=True)
    db, tokens = seeded_database(root)
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    server_log = root / "server.log"
    verdicts, started = {}, time.perf_counter()
    with running_server(db, "--log-level", "info", "--max-compose-mb", 256, log=server_log) as url:
        for scope in SCOPES:
            cmd = [st, "run", f"{url}/openapi.json", "--checks", CHECKS, "-H", f"Authorization: Bearer {tokens[scope]}",
                   "--max-examples", str(max_examples), "--seed", str(seed), "--max-time", str(int(max_seconds_per_scope)),
                   "--request-timeout", "60", "--no-color", "--workers", "1"]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)  # its example database stays in root
            verdicts[scope] = {"exit_code": proc.returncode, "summary": _summary(proc.stdout + proc.stderr)}
            log(f"{scope}: schemathesis exit {proc.returncode}")
            if proc.returncode != 0:
                (root / f"schemathesis-{scope}.txt").write_text(proc.stdout + proc.stderr)
        uploaded = None
        if uploads:
            adapter = root / "alpha-rec"
            doc = representation_doc(represent_texts(root / "bert", ["bake the bread", "boil the pasta"], progress=False))
            with httpx.Client(base_url=f"{url}/v1", headers={"Authorization": f"Bearer {tokens['write']}"},
                              timeout=60) as http:
                uploaded = fuzz_uploads(lambda files, data: http.post("/records", files=files, data=data),
                                        (adapter / "adapter_config.json").read_bytes(),
                                        (adapter / "adapter_model.safetensors").read_bytes(), doc, count=uploads, seed=seed)
            log(f"uploads: {uploads} damaged adapter files, statuses {uploaded['statuses']}")
    seconds = time.perf_counter() - started
    statuses = [(m.group(1), m.group(2), int(m.group(3))) for m in _ACCESS.finditer(server_log.read_text())]
    with LoraDB(db) as handle:
        report = handle.check()
    return {"requests": len(statuses), "server_errors": [s for s in statuses if s[2] >= 500],
            "by_status": {str(k): sum(1 for s in statuses if s[2] == k) for k in sorted({s[2] for s in statuses})},
            "verdicts": verdicts, "seconds": seconds, "check_clean": report.clean, "check_problems": report.problems,
            "max_examples": max_examples, "seed": seed, **({"uploads": uploaded} if uploaded is not None else {})}


def _summary(output: str) -> str:
    """The fuzzer's last lines (its totals), for the report."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return "\n".join(lines[-12:])


if __name__ == "__main__":  # a quick manual run: python tests/fuzzing.py DIR [N]
    print(json.dumps(fuzz(Path(sys.argv[1]), max_examples=int(sys.argv[2]) if len(sys.argv) > 2 else 10, seed=1,
                          max_seconds_per_scope=60), indent=2, default=str))
