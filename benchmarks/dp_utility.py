"""What differential privacy costs the retrieval, on the demo's model and public VADER domains.

Each domain's training texts are split in two halves at random (seeded): half A stands
for the data an adapter was trained on (its exact prototype is what the database holds),
half B for a new owner's private data of the same kind, released only as a DP vector.
The question is the one a user asks: does a noisy release of B still retrieve the
adapter of A (held-out retrieval, not "is the noisy mean near its own exact mean")?

The clip norm C is chosen on public data disjoint from everything released: the 99th
percentile of per-example feature norms over the domains' test splits (the released
halves and the prototypes come from the training splits). For several epsilon (delta
1e-5): the noise sigma, how often the release retrieves its own domain's adapter first
(against the same rate for the exact, non-private mean of B), and how far the similarity
and linear weights over all four prototypes move from those of the exact mean of B.

Run: python benchmarks/dp_utility.py [--draws 50] [--out benchmarks/reports/dp-utility]
(fetches the VADER data once, like the demo)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from runinfo import write_run_info

from loradb.evaluate.datasets.vader import vader_domains
from loradb.evaluate.domains import load_domains
from loradb.models.packaged import packaged_minilm
from loradb.retrieval.privacy import DPConfig, clip_rows, gaussian_sigma, privatize_mean
from loradb.retrieval.represent import Encoder
from loradb.weighting.registry import compute_weights

DELTA = 1e-5
EPSILONS = (0.5, 1, 2, 4, 8)


def features(encoder: Encoder, texts: list[str], batch: int = 64) -> np.ndarray:
    return np.concatenate([encoder.features(texts[i:i + batch]).double().numpy() for i in range(0, len(texts), batch)])


def halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=50, help="DP releases per domain and epsilon")
    parser.add_argument("--out", help="write results.json, RUN.md and run.json here")
    args = parser.parse_args()
    started = time.perf_counter()
    encoder = Encoder(packaged_minilm())
    domains = load_domains(vader_domains())
    names = [d.name for d in domains]
    train = {d.name: features(encoder, d.train_texts) for d in domains}
    public = np.concatenate([features(encoder, d.test_texts) for d in domains])  # disjoint from every release
    public_norms = np.linalg.norm(public, axis=1)
    clip = float(np.percentile(public_norms, 99))
    split = {d: halves(len(f), seed=i) for i, (d, f) in enumerate(train.items())}
    prototypes = {d: train[d][split[d][0]].mean(0) for d in names}  # the adapters' data (half A)
    private = {d: train[d][split[d][1]] for d in names}  # the new owners' data (half B)
    Z = np.stack([prototypes[d] for d in names])
    released_norms = np.linalg.norm(np.concatenate(list(private.values())), axis=1)
    print(f"C = {clip:.3f}: the p99 feature norm of {len(public)} public test texts; "
          f"{(released_norms > clip).mean():.1%} of the released examples are clipped by it")

    def retrieved(z: np.ndarray) -> str:
        return names[int(np.argmin(((Z - z) ** 2).sum(1)))]

    exact_b = {d: private[d].mean(0) for d in names}
    exact_hits = sum(retrieved(exact_b[d]) == d for d in names)
    reference = {d: {m: compute_weights(m, exact_b[d], Z).weights for m in ("similarity", "linear")} for d in names}
    gaps = [float(np.sum((prototypes[a] - prototypes[b]) ** 2)) for i, a in enumerate(names) for b in names[i + 1:]]
    own_gap = [float(np.sum((exact_b[d] - prototypes[d]) ** 2)) for d in names]
    print(f"without DP the exact mean of half B retrieves its own adapter for {exact_hits}/{len(names)} domains; "
          f"squared distance half B -> own prototype {min(own_gap):.3f}-{max(own_gap):.3f}, between prototypes "
          f"{min(gaps):.3f}-{max(gaps):.3f}")
    rows = []
    print("epsilon | sigma (n=400) | noise |e|^2 | own adapter retrieved | weight change (L1): similarity, linear")
    for epsilon in EPSILONS:
        config = DPConfig(epsilon, DELTA, clip)
        hits, changes = 0, {"similarity": [], "linear": []}
        for d in names:
            clipped_sum = clip_rows(private[d], clip).sum(0)
            for _ in range(args.draws):
                z, _ = privatize_mean(clipped_sum, len(private[d]), config)
                hits += retrieved(z) == d
                for m in changes:
                    changes[m].append(float(np.abs(compute_weights(m, z, Z).weights - reference[d][m]).sum()))
        n = len(private[names[0]])
        sigma = gaussian_sigma(2 * clip / n, epsilon, DELTA)
        row = {"epsilon": epsilon, "sigma": sigma, "n": n, "noise_sq_norm": Z.shape[1] * sigma ** 2, "retrieved_own": hits,
               "releases": len(names) * args.draws, "weight_change_similarity": float(np.mean(changes["similarity"])),
               "weight_change_linear": float(np.mean(changes["linear"]))}
        rows.append(row)
        print(f"{epsilon:>7g} | {sigma:.4f}        | {row['noise_sq_norm']:.3f}       | {hits}/{row['releases']}"
              f"              | {row['weight_change_similarity']:.3f}, {row['weight_change_linear']:.3f}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        doc = {"delta": DELTA, "clip": clip, "clip_source": "p99 feature norm of the VADER test splits (public, disjoint)",
               "clipped_fraction_released": float((released_norms > clip).mean()), "draws": args.draws,
               "exact_retrieved_own": exact_hits, "domains": names, "prototype_gaps_sq": gaps,
               "own_gap_sq": dict(zip(names, own_gap)), "rows": rows}
        (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
        write_run_info(out, started)


if __name__ == "__main__":
    main()
