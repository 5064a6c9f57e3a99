"""Compose speed: loradb against PEFT's add_weighted_adapter, in one process.

Setup (issue 4): a randomly initialised Llama-style model (hidden 2048, 4 layers),
8 LoRA adapters of rank 16 on q/k/v/o with random non-zero factors. Measured:
  - compressed: our rank-16 compose (stack + QR + small SVD) vs PEFT combination_type="svd", svd_rank=16
  - exact:      our stacked-factor compose vs PEFT combination_type="cat"
with wall-clock ratios, relative Frobenius errors against the exact weighted sum
(computed densely in float64 here, as the reference), and the peak extra resident
memory of each operation (sampled from /proc/self/statm every millisecond).
Then the demo's adaptation path (represent + search + weights + compose) against SFT
training of the same domain (needs the demo's cached data; skip with --skip-adaptation).

PEFT's add_weighted_adapter also injects a new adapter into the model; that part is timed
on its own and reported beside its total (see compose_benchmark).

Run: python benchmarks/compose_speed.py [--repeats 3] [--skip-adaptation] [--out benchmarks/reports/compose-speed]
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import torch

HIDDEN, LAYERS, N_ADAPTERS, RANK = 2048, 4, 8, 16
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class PeakRSS:
    """Peak resident memory above the level at entry, sampled by a background thread."""

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.base = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self._rss())
        self.extra = self.peak - self.base


def build_peft_model():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=1024, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=16,
                      num_key_value_heads=16, intermediate_size=4 * HIDDEN, max_position_embeddings=128)
    model = LlamaForCausalLM(cfg).eval()
    lora = LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=list(TARGETS), init_lora_weights=False)
    peft_model = get_peft_model(model, lora, adapter_name="a0")
    for i in range(1, N_ADAPTERS):
        peft_model.add_adapter(f"a{i}", lora)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return peft_model


def lora_layers(peft_model):
    return {name: m for name, m in peft_model.base_model.model.named_modules() if hasattr(m, "lora_A") and "a0" in m.lora_A}


def our_factors(peft_model):
    """Each adapter as module -> (A, B, scale), read from the same PEFT model."""
    layers = lora_layers(peft_model)
    return [{name: (m.lora_A[f"a{i}"].weight.detach(), m.lora_B[f"a{i}"].weight.detach(), m.scaling[f"a{i}"])
             for name, m in layers.items()} for i in range(N_ADAPTERS)]


def exact_sums(factors, weights):
    """The reference: sum_i w_i s_i B_i A_i per module, dense, float64."""
    out = {}
    for name in factors[0]:
        out[name] = sum(w * s * (B.double() @ A.double()) for (A, B, s), w in ((f[name], w) for f, w in zip(factors, weights)))
    return out


def rel_error(deltas: dict, reference: dict) -> float:
    num = sum(float(torch.linalg.norm(deltas[n].double() - reference[n]) ** 2) for n in reference)
    den = sum(float(torch.linalg.norm(reference[n]) ** 2) for n in reference)
    return (num / den) ** 0.5


def timed(fn, repeats, setup=None):
    """Best wall time of `fn` over `repeats` runs; `setup` runs before each, untimed."""
    best, result = float("inf"), None
    for _ in range(repeats):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def compose_benchmark(repeats: int) -> dict:
    """Both merges timed on the same work. PEFT's add_weighted_adapter does two things: it
    injects a new adapter into the model (new LoRA layers of the combined rank, allocated
    and initialised) and then computes the combination into them. loradb computes the
    combination only (writing it is a separate step). So PEFT's injection is timed on its
    own (add_adapter with the same combined rank) and reported beside its total; the ratio
    compares loradb's combination with PEFT's total minus that injection. Deleting the
    previous result is untimed on PEFT's side (loradb has nothing to delete)."""
    from peft import LoraConfig

    from loradb.lora.compose import compose_exact, compress

    peft_model = build_peft_model()
    factors = our_factors(peft_model)
    weights = [0.3, -0.2, 0.25, 0.15, 0.1, 0.2, -0.05, 0.25]
    names = [f"a{i}" for i in range(N_ADAPTERS)]
    reference = exact_sums(factors, weights)
    adapter_mb = sum(A.nbytes + B.nbytes for f in factors for A, B, _ in f.values()) / 2**20
    print(f"setup: Llama-style, hidden {HIDDEN}, {LAYERS} layers, {len(reference)} modules (q/k/v/o), "
          f"{N_ADAPTERS} adapters of rank {RANK} ({adapter_mb:.1f} MiB of factors)")

    def drop(name):
        return lambda: peft_model.delete_adapter(name) if name in peft_model.peft_config else None

    def inject(rank):
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(TARGETS))
        return lambda: peft_model.add_adapter("probe", config)

    cases = {
        "compressed": ("compressed rank 16 vs PEFT svd", lambda: compress(compose_exact(factors, weights), rank=RANK)[0],
                       lambda: peft_model.add_weighted_adapter(names, weights, "svd16", combination_type="svd", svd_rank=RANK),
                       "svd16", RANK),
        "exact": ("exact vs PEFT cat", lambda: compose_exact(factors, weights),
                  lambda: peft_model.add_weighted_adapter(names, weights, "cat", combination_type="cat"), "cat", N_ADAPTERS * RANK),
    }
    results = {}
    for key, (label, ours, theirs, peft_name, combined_rank) in cases.items():
        with PeakRSS() as mem_ours:
            t_ours, composed = timed(ours, repeats)
        with PeakRSS() as mem_peft:
            t_peft, _ = timed(theirs, repeats, setup=drop(peft_name))
        t_inject, _ = timed(inject(combined_rank), repeats, setup=drop("probe"))
        drop("probe")()
        layers = lora_layers(peft_model)
        peft_deltas = {n: m.get_delta_weight(peft_name).detach() for n, m in layers.items()}
        ours_deltas = {n: B @ A for n, (A, B) in composed.items()}
        results[key] = {"label": label, "loradb_s": t_ours, "peft_total_s": t_peft, "peft_inject_s": t_inject,
                        "peft_combine_s": max(t_peft - t_inject, 0.0), "loradb_rel_error": rel_error(ours_deltas, reference),
                        "peft_rel_error": rel_error(peft_deltas, reference), "loradb_peak_mib": mem_ours.extra / 2**20,
                        "peft_peak_mib": mem_peft.extra / 2**20}
        r = results[key]
        r["speedup_total"] = t_peft / t_ours
        r["speedup_combine"] = r["peft_combine_s"] / t_ours
    print(f"\n{'':<32}{'loradb s':>10}{'PEFT s':>10}{'inject s':>10}{'x total':>9}{'x combine':>10}{'loradb err':>12}"
          f"{'PEFT err':>12}{'loradb MiB':>12}{'PEFT MiB':>10}")
    for r in results.values():
        print(f"{r['label']:<32}{r['loradb_s']:>10.4f}{r['peft_total_s']:>10.3f}{r['peft_inject_s']:>10.3f}"
              f"{r['speedup_total']:>8.0f}x{r['speedup_combine']:>9.0f}x{r['loradb_rel_error']:>12.3e}{r['peft_rel_error']:>12.3e}"
              f"{r['loradb_peak_mib']:>12.1f}{r['peft_peak_mib']:>10.1f}")
    print("(best of", repeats, "runs each; PEFT s: add_weighted_adapter, deleting the previous result untimed; inject s: "
          "PEFT's add_adapter at the combined rank alone; x combine: (PEFT s - inject s) / loradb s; errors: relative "
          "Frobenius error against the exact weighted sum; MiB: peak resident memory above the level before the operation)")
    return results


def adaptation_benchmark() -> None:
    """The demo's adaptation path for one held-out domain against SFT training on it."""
    import tempfile
    from pathlib import Path

    from loradb.evaluate.datasets.vader import vader_domains
    from loradb.db.database import LoraDB
    from loradb.models.packaged import packaged_minilm
    from loradb.evaluate.domains import load_domains
    from loradb.retrieval.represent import Encoder, save_representation
    from loradb.models.train import TrainConfig, train_lora

    base = packaged_minilm()
    domains = load_domains(vader_domains())
    prompts = domains[0].prompts
    held, refs = domains[0], domains[1:]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        sft = train_lora(base, held.train_texts, held.train_labels, prompts, tmp / "sft", TrainConfig(), progress=False)
        t_sft = time.perf_counter() - t0
        encoder = Encoder(base)
        db = LoraDB.init(tmp / "db")
        for r in refs:  # the references' adapters: trained here too (not part of the adaptation being timed)
            train_lora(base, r.train_texts, r.train_labels, prompts, tmp / r.name, TrainConfig(max_examples=64, epochs=1), progress=False)
            save_representation(encoder.represent(r.train_texts, progress=False), tmp / f"{r.name}.npy")
            db.add(tmp / r.name, repr=tmp / f"{r.name}.npy", name=r.name, progress=False)
        t0 = time.perf_counter()
        save_representation(Encoder(base).represent(held.test_texts, progress=False), tmp / "target.npy")
        db.compose(tmp / "adapted", repr=tmp / "target.npy", k=5, method="sparse", progress=False)
        t_adapt = time.perf_counter() - t0
    print(f"\nadaptation path for held-out '{held.name}' ({len(held.test_texts)} unlabeled texts: load encoder, represent, "
          f"search, weights, compose, write): {t_adapt:.2f} s")
    print(f"SFT training on its {sft.examples} labeled examples ({TrainConfig().epochs} epochs): {t_sft:.1f} s "
          f"-> adaptation is {t_sft / t_adapt:.0f}x faster")
    return {"held_out": held.name, "unlabeled_texts": len(held.test_texts), "adapt_s": t_adapt, "sft_s": t_sft,
            "sft_examples": sft.examples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-adaptation", action="store_true")
    parser.add_argument("--out", help="write results.json, RUN.md and run.json here (e.g. benchmarks/reports/compose-speed)")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(0)
    results = {"repeats": args.repeats, "compose": compose_benchmark(args.repeats)}
    if not args.skip_adaptation:
        results["adaptation"] = adaptation_benchmark()
    if args.out:
        import json
        from pathlib import Path

        from runinfo import write_run_info

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        write_run_info(out, started)


if __name__ == "__main__":
    main()
