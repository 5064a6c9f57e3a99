"""Adaptation at serving time: `loradb route` in front of a real vLLM engine, per request vs per dataset.

The library: the generation zoo's 15 SmolLM2-135M-Instruct adapters (benchmarks/zoo_generation.py's
training, from the cache), each stored with z of its training inputs. The stream: a seeded
`--per-domain` test inputs of every domain, shuffled into one stream; loradb is never told a
request's domain. Each request is the prompt its domain's adapter was trained on (the
instruction and the input in one chat turn), greedy, 32 new tokens, the first line kept (as
the zoo's ROUGE-L). Rows, all served by the same vLLM through the router:

- per-request: `loradb:auto`, z of the request's input (`represent`), k and method the defaults;
- per-request, whole prompt: the same without `represent` (z of the whole user turn, instruction included);
- per-dataset: one adaptation made from every input of the stream (the paper's flow on a mixed stream);
- merge-all: one adaptation of all 15 adapters, uniform weights;
- base: the engine's base model; oracle: each request's own domain adapter, by name.

ROUGE-L per row with 95% paired bootstrap intervals (requests resampled) of per-request minus
each other row. Then the serving cost, timed on the same prompts: (a) vLLM called directly with
a fixed adapter, (b) the router on a cache hit (the same adapter by record name), (c) the router
cold (`loradb:auto` with k = 5 on prompts it has not seen: represent, search, compose, load);
p50 / p99 latency of sequential requests; and throughput of 16 concurrent clients, each with its
own composition (16 adaptations, loaded), against 16 clients of one adapter on vLLM directly.

Run: python benchmarks/route.py [--out benchmarks/reports/route] [--per-domain 4] [--reprs DIR]
(needs `make engine`; about 50 min on a 2-core CPU at --per-domain 4; trains the zoo's adapters first if the cache lacks them)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from runinfo import write_run_info
from zoo_generation import ZOO_GENERATION_EVAL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from server_helpers import start_server, stop_server
from services import free_port

from loradb.db.database import LoraDB
from loradb.evaluate.datasets import collection_dir
from loradb.evaluate.domains import load_generation_domains
from loradb.evaluate.harness import train_pool
from loradb.evaluate.metrics import rouge
from loradb.models.generate import DEFAULT_MAX_NEW_TOKENS, PromptFormat
from loradb.models.packaged import packaged_smollm2
from loradb.models.prompts import DEFAULT_INSTRUCTION
from loradb.route.engine import EngineLimits
from loradb.route.launch import start_engine

WHOLE_PROMPT = "per-request, whole prompt"  # what `loradb:auto` does when the request names no `represent`

# vLLM's CPU LoRA path costs in proportion to max_loras x max_lora_rank (measured here: 32 tokens
# in 3.0 s bare, 5.0 s with one rank-8 adapter at (1, 16), 12.3 s at (4, 128)); so merge-all
# (15 x rank 8 = 120) is compressed to rank 64 by the router, as it would be in front of this engine
QUALITY_LIMITS = EngineLimits(max_loras=2, max_lora_rank=64)
LATENCY_LIMITS = EngineLimits(max_loras=2, max_lora_rank=64)
THROUGHPUT_LIMITS = EngineLimits(max_loras=16, max_lora_rank=64)  # 16 compositions of k=5 (rank 40) at once
TIMED_REQUESTS = 10
CONCURRENT = 16
REPS = 2000


def first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0].strip() if text else ""


def stream_of(domains, per_domain: int, tokenizer, max_input_tokens: int) -> list[dict]:
    """Every domain's seeded sample of test pairs, as requests, shuffled into one stream."""
    requests = []
    for d in domains:
        fmt = PromptFormat(tokenizer, d.instruction, max_input_tokens=max_input_tokens)
        for i in sorted(random.Random(f"route-{d.name}").sample(range(len(d.test_texts)), per_domain)):
            requests.append({"domain": d.name, "input": d.test_texts[i], "target": d.test_labels[i],
                             "prompt": fmt.prompt(d.test_texts[i])})
    random.Random("route-stream").shuffle(requests)
    return requests


def complete(client: httpx.Client, model: str, prompt: str, **loradb) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": DEFAULT_MAX_NEW_TOKENS, "temperature": 0}
    if loradb:
        body["loradb"] = loradb
    r = client.post("/v1/completions", json=body)
    if r.status_code != 200:
        raise RuntimeError(f"{model}: {r.status_code} {r.text[:500]}")
    return r.json()


def writer(db: Path) -> dict:
    """The header a router needs to make adaptations: a write token of the database."""
    from loradb.db.access import create_token

    with LoraDB(db) as opened:
        return {"Authorization": f"Bearer {create_token(opened, 'route-benchmark', 'write')[0]}"}


def quality(client: httpx.Client, stream: list[dict], base_name: str, headers: dict) -> dict:
    """Each row's outputs and per-request ROUGE-L, and what served each per-request answer."""
    inputs = [r["input"] for r in stream]
    for name, options in (("per-dataset", {"k": 5}), ("merge-all", {"k": 15, "method": "uniform"})):
        made = client.post("/v1/adaptations", json={"name": name, "texts": inputs, **options}, headers=headers)
        if made.status_code != 201:
            raise RuntimeError(f"{name}: {made.text}")
    rows: dict = {}
    plans = {
        "per-request": lambda r: ("loradb:auto", {"represent": r["input"]}),
        WHOLE_PROMPT: lambda r: ("loradb:auto", {}),
        "per-dataset": lambda r: ("per-dataset", {}),
        "merge-all": lambda r: ("merge-all", {}),
        "base": lambda r: (base_name, {}),
        "oracle (own adapter)": lambda r: (r["domain"], {}),
    }
    for row, plan in plans.items():
        outputs, served, started, first = [], [], time.perf_counter(), None
        for r in stream:
            model, options = plan(r)
            answer = complete(client, model, r["prompt"], **options)
            first = first or answer.get("loradb")
            outputs.append(first_line(answer["choices"][0]["text"]))
            served.append([p["name"] for p in answer["loradb"]["records"]] if "loradb" in answer else [])
        per_request = [rouge([r["target"]], [o])["rougeL"] for r, o in zip(stream, outputs, strict=True)]
        rows[row] = {"rougeL": float(np.mean(per_request)), "per_request": per_request, "outputs": outputs,
                     "served_by": served, "seconds": round(time.perf_counter() - started, 1), "first_served": first}
        print(f"{row:28} ROUGE-L {rows[row]['rougeL']:.4f}  ({rows[row]['seconds']} s)", flush=True)
    return rows


def intervals(rows: dict, row: str, seed: int = 0) -> dict:
    """The paired bootstrap 95% interval of `row` minus every other row, requests resampled."""
    rng = np.random.default_rng(seed)
    mine = np.asarray(rows[row]["per_request"])
    picks = rng.integers(0, len(mine), size=(REPS, len(mine)))
    out = {}
    for other, values in rows.items():
        if other == row:
            continue
        diff = mine - np.asarray(values["per_request"])
        boot = diff[picks].mean(axis=1)
        out[other] = {"diff": float(diff.mean()), "ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]}
    return out


def retrieval_hits(rows: dict, stream: list[dict]) -> dict:
    """How often per-request routing put the request's own domain first, and among its k."""
    served = rows["per-request"]["served_by"]
    first = sum(bool(s) and s[0] == r["domain"] for s, r in zip(served, stream))
    anywhere = sum(r["domain"] in s for s, r in zip(served, stream))
    return {"own_domain_first": first / len(stream), "own_domain_in_k": anywhere / len(stream)}


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"p50_s": statistics.median(ordered), "p99_s": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
            "n": len(ordered)}


async def throughput(url: str, jobs: list[tuple[str, str]]) -> float:
    """Requests per second of `jobs` (model, prompt), CONCURRENT at a time."""
    queue = list(jobs)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        async def worker():
            while queue:
                model, prompt = queue.pop()
                r = await client.post("/v1/completions", json={"model": model, "prompt": prompt, "temperature": 0,
                                                               "max_tokens": DEFAULT_MAX_NEW_TOKENS, "ignore_eos": True})
                r.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENT)))
        return len(jobs) / (time.perf_counter() - started)


@contextlib.contextmanager
def engine_and_router(db: Path, base: Path, limits: EngineLimits, work: Path, engine_args: tuple[str, ...] = ()):
    """A vLLM engine with these limits and `loradb route` in front of it: (engine, router URL)."""
    work.mkdir(parents=True, exist_ok=True)
    engine = start_engine(base, port=free_port(), limits=limits, log=work / "engine.log", extra_args=engine_args)
    proc = None
    try:
        proc, url = start_server(db, "--base", base, "--engine", engine.url, "--max-loras", limits.max_loras,
                                 "--max-lora-rank", limits.max_lora_rank, "--state", work / "state",
                                 log=work / "router.log", command="route", ready="/v1/models", timeout=300)
        yield engine, url
    finally:
        if proc is not None:
            stop_server(proc)
        engine.stop()


def cost(db: Path, base: Path, stream: list[dict], work: Path) -> dict:
    """Latency of vLLM direct vs the router (hit, cold), and throughput with 16 compositions in flight."""
    result = latency(db, base, stream, work / "latency")
    result["throughput"] = throughput_16(db, base, stream, work / "throughput")
    hit, base_p50 = result["router_cache_hit"]["p50_s"], result["vllm_direct"]["p50_s"]
    result["targets"] = {"cache_hit_overhead": hit / base_p50 - 1, "cold_added_s": result["cold_added_s"]["p50_s"],
                         "throughput_ratio": result["throughput"]["ratio"]}
    return result


def latency(db: Path, base: Path, stream: list[dict], work: Path) -> dict:
    """Sequential requests on an engine at LATENCY_LIMITS: one adapter through vLLM directly and
    through the router (a cache hit, the same prompts), and the router's cold path."""
    # without vLLM's prefix cache: a prompt's second run would otherwise skip its prefill, and
    # whichever side of a comparison ran second would look faster (it did: direct 6.9 s, the same
    # requests through the router then 3.8 s)
    with engine_and_router(db, base, LATENCY_LIMITS, work, ("--no-enable-prefix-caching",)) as (engine, url), \
            httpx.Client(base_url=url, timeout=600) as router, httpx.Client(base_url=engine.url, timeout=600) as direct:
        record = stream[0]["domain"]
        name = complete(router, record, stream[0]["prompt"])["loradb"]["adapter"]  # loaded through the router
        prompts = [r["prompt"] for r in stream[:TIMED_REQUESTS]]

        def vllm_direct(p):
            direct.post("/v1/completions", json={"model": name, "prompt": p, "max_tokens": DEFAULT_MAX_NEW_TOKENS,
                                                 "temperature": 0}).raise_for_status()

        sides = {"vllm_direct": vllm_direct, "router_cache_hit": lambda p: complete(router, record, p)}
        times: dict[str, list[float]] = {side: [] for side in sides}
        for i, p in enumerate(prompts):  # the two sides alternate which goes first
            for side in (list(sides) if i % 2 == 0 else list(sides)[::-1]):
                started = time.perf_counter()
                sides[side](p)
                times[side].append(time.perf_counter() - started)
        result = {"limits": vars(LATENCY_LIMITS), "prefix_caching": False, **{s: summary(t) for s, t in times.items()}}
        # cold: inputs the router has not seen, so it represents, searches, composes and loads; then the
        # same request again, a hit on that composition that generates the same tokens: the difference
        # is what the cold path adds
        cold: list[float] = []
        again: list[float] = []
        for r in stream[TIMED_REQUESTS:2 * TIMED_REQUESTS]:
            for run in (cold, again):
                started = time.perf_counter()
                answer = complete(router, "loradb:auto", r["prompt"], represent=r["input"], k=5)
                run.append(time.perf_counter() - started)
            assert answer["loradb"]["cached"] is True
        result["router_cold_auto_k5"] = summary(cold)
        result["router_same_request_again"] = summary(again)
        result["cold_added_s"] = summary([c - a for c, a in zip(cold, again)])
        return result


def throughput_16(db: Path, base: Path, stream: list[dict], work: Path) -> dict:
    """On an engine at THROUGHPUT_LIMITS: CONCURRENT clients of one adapter on vLLM directly, then
    CONCURRENT clients each with its own composition (an adaptation, loaded) through the router."""
    sample = [r["prompt"] for r in stream[:CONCURRENT * 2]]
    with engine_and_router(db, base, THROUGHPUT_LIMITS, work) as (engine, url), \
            httpx.Client(base_url=url, timeout=600) as router, httpx.Client(base_url=engine.url, timeout=600) as direct:
        with LoraDB(db) as library_db:
            fixed = library_db.export(stream[0]["domain"], work / "fixed-adapter")
        direct.post("/v1/load_lora_adapter", json={"lora_name": "fixed", "lora_path": str(fixed)}).raise_for_status()
        direct.post("/v1/completions", json={"model": "fixed", "prompt": sample[0], "max_tokens": 1}).raise_for_status()
        single = asyncio.run(throughput(engine.url, [("fixed", p) for p in sample]))
        direct.post("/v1/unload_lora_adapter", json={"lora_name": "fixed"}).raise_for_status()
        names, headers = [], writer(db)
        for i in range(CONCURRENT):
            texts = [r["input"] for r in stream[i::CONCURRENT]]
            router.post("/v1/adaptations", json={"name": f"client-{i}", "texts": texts, "k": 5},
                        headers=headers).raise_for_status()
            names.append(f"client-{i}")
            complete(router, names[-1], sample[0])  # composed and loaded before timing
        sixteen = asyncio.run(throughput(url, [(names[i % CONCURRENT], p) for i, p in enumerate(sample)]))
    return {"limits": vars(THROUGHPUT_LIMITS), "vllm_one_adapter_rps": single, "router_16_compositions_rps": sixteen,
            "ratio": sixteen / single, "requests": len(sample), "concurrent": CONCURRENT}


def library(db_path: Path, domains, adapters: dict, base: Path, reprs: Path | None) -> Path:
    """The 15 adapters with z of their training inputs (about 12 min to compute, kept for a re-run;
    or read from `reprs`, where zoo_generation.py keeps the same vectors: work/references)."""
    with (LoraDB(db_path) if db_path.is_dir() else LoraDB.init(db_path)) as db:
        held = {r.name for r in db.list()}
        for d in domains:
            if d.name not in held:
                print(f"adding {d.name}", flush=True)
                made = reprs / f"{d.name}.npy" if reprs is not None else None
                db.add(adapters[d.name], **({"repr": made} if made is not None and made.is_file() else {"data": d.train_path}),
                       base=base, name=d.name, meta={"family": d.family}, progress=False)
    return db_path


def _quality_lines(results: dict) -> list[str]:
    lines = [(f"{results['requests']} requests ({results['per_domain']} from each of {len(results['domains'])} generation-zoo "
              "domains), shuffled into one stream; greedy, 32 new tokens, first line; ROUGE-L. `per-request, whole prompt` "
              "is `loradb:auto` as it comes (z of the whole user turn); `per-request` names the request's input alone "
              "(`represent`)."), "",
             "| row | ROUGE-L | per-request minus this row | per-request, whole prompt minus this row |", "|---|---|---|---|"]

    def shown(vs):
        return f"{vs['diff']:+.4f} [{vs['ci95'][0]:+.4f}, {vs['ci95'][1]:+.4f}]" if vs else "-"

    for row, values in results["rows"].items():
        lines.append(f"| {row} | {values['rougeL']:.4f} | {shown(results['per_request_vs'].get(row))} | "
                     f"{shown(results['whole_prompt_vs'].get(row))} |")
    lines += ["", "Differences are means over requests with 95% paired bootstrap intervals (requests resampled)."]
    hits = results["retrieval"]
    lines += ["", (f"Per-request routing put the request's own domain first for {hits['own_domain_first']:.0%} of requests "
                   f"and among its k for {hits['own_domain_in_k']:.0%}.")]
    return lines


def write_report(results: dict, out: Path) -> None:
    """report.md: ROUGE-L per row with per-request's paired intervals, retrieval, and the serving cost."""
    lines = ["# loradb route in front of vLLM: per request vs per dataset", ""]
    if "rows" not in results:
        lines += ["The quality part has not been run into this report (`--cost-only`)."]
    else:
        lines += _quality_lines(results)
    if "cost" in results:
        c = results["cost"]
        lines += ["", f"## Serving cost (sequential requests on an engine at {c['limits']}; seconds)", "",
                  "| path | p50 | p99 | n |", "|---|---|---|---|"]
        for path in ("vllm_direct", "router_cache_hit", "router_cold_auto_k5", "router_same_request_again", "cold_added_s"):
            lines.append(f"| {path} | {c[path]['p50_s']:.3f} | {c[path]['p99_s']:.3f} | {c[path]['n']} |")
        t = c["throughput"]
        lines += ["", (f"Throughput on an engine at {t['limits']}, {t['concurrent']} concurrent clients, {t['requests']} "
                       f"requests each: vLLM with one adapter "
                       f"{t['vllm_one_adapter_rps']:.3f} req/s; the router with 16 compositions "
                       f"{t['router_16_compositions_rps']:.3f} req/s (ratio {t['ratio']:.2f})."), "",
                  (f"Targets: cache-hit overhead {c['targets']['cache_hit_overhead']:+.1%} of vLLM's p50 (target <= 10%); "
                   f"cold path adds {c['targets']['cold_added_s']:.3f} s at p50 (target <= 1 s); throughput ratio "
                   f"{c['targets']['throughput_ratio']:.2f} (target >= 0.8).")]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="route-report", help="report directory (default route-report)")
    parser.add_argument("--per-domain", type=int, default=4, help="requests from each of the 15 domains (default 4)")
    parser.add_argument("--no-cost", action="store_true", help="quality only")
    parser.add_argument("--report-only", action="store_true", help="write report.md from --out's results.json")
    parser.add_argument("--cost-only", action="store_true", help="the serving cost only, added to --out's results.json")
    parser.add_argument("--work", default="route-work", help="the library database, kept for a re-run (default route-work)")
    parser.add_argument("--reprs", help="z of each domain's training inputs, made earlier: DOMAIN.npy files "
                        "(zoo_generation.py's OUT/work/references)")
    args = parser.parse_args()
    started = time.perf_counter()
    out = Path(args.out)
    if args.report_only:  # also fills in what an earlier version of this script did not compute
        results = json.loads((out / "results.json").read_text())
        if "rows" in results and "whole_prompt_vs" not in results:
            results["whole_prompt_vs"] = intervals(results["rows"], WHOLE_PROMPT)
            (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        write_report(results, out)
        return
    out.mkdir(parents=True, exist_ok=True)
    base = packaged_smollm2()
    domains_dir = collection_dir("zoo-generation")
    adapters = train_pool(base, domains_dir, ZOO_GENERATION_EVAL)
    domains = load_generation_domains(domains_dir, DEFAULT_INSTRUCTION)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    assert ZOO_GENERATION_EVAL.train is not None
    stream = stream_of(domains, args.per_domain, tokenizer, ZOO_GENERATION_EVAL.train.max_length)
    work = Path(args.work)
    db_path = library(work / "db", domains, adapters, base, Path(args.reprs) if args.reprs else None)
    results_file = out / "results.json"
    # The two parts can be run apart (the cost on an idle machine); each keeps the other's results.
    earlier = json.loads(results_file.read_text()) if results_file.is_file() else {}
    part = "quality" if args.no_cost else "cost" if args.cost_only else "all"
    with tempfile.TemporaryDirectory(prefix="loradb-route-bench-") as tmp:
        work = Path(tmp)
        if args.cost_only:
            results = earlier
        else:
            with engine_and_router(db_path, base, QUALITY_LIMITS, work / "quality") as (_, url), \
                    httpx.Client(base_url=url, timeout=600) as client:
                base_name = client.get("/v1/models").json()["data"][0]["id"]
                rows = quality(client, stream, base_name, writer(db_path))
            results = {"requests": len(stream), "per_domain": args.per_domain, "domains": [d.name for d in domains],
                       "rows": {r: {k: v for k, v in row.items() if k != "outputs"} for r, row in rows.items()},
                       "per_request_vs": intervals(rows, "per-request"), "whole_prompt_vs": intervals(rows, WHOLE_PROMPT),
                       "retrieval": retrieval_hits(rows, stream),
                       "stream": [{k: r[k] for k in ("domain", "input", "target")} for r in stream],
                       "outputs": {r: row["outputs"] for r, row in rows.items()}}
            if args.no_cost:
                results.update({k: earlier[k] for k in ("cost", "made_by") if k in earlier})
            results_file.write_text(json.dumps(results, indent=1) + "\n")  # kept even if the cost part fails
        if not args.no_cost:
            results["cost"] = cost(db_path, base, stream, work / "cost")
    kept = {"quality": ("cost", "all"), "cost": ("quality", "all"), "all": ()}[part]  # what this run did not redo
    made_by = {k: v for k, v in results.get("made_by", {}).items() if k in kept}
    note = "".join(f"The {'other' if k == 'all' else k} part comes from an earlier run: `{v['command']}`, finished {v['finished']} after "
                   f"{v['wall_seconds']:.0f} s. " for k, v in made_by.items())
    made_by[part] = write_run_info(out, started, note=note.strip())
    results["made_by"] = made_by
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, out)
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
