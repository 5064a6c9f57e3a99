"""The benchmark report: results.json (every number), report.md (the paper's table shape)
and PNG plots (distance vs transfer, weights per method)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LABELS = {"pretrained": "Pre-trained (zero-shot)", "nearest": "Nearest", "uniform": "Uniform", "similarity": "Similarity",
          "linear": "Linear", "sparse": "Sparse", "sft": "SFT (oracle)"}


METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "rougeL": "ROUGE-L", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2"}


def _metrics(results: dict) -> list[str]:
    """The task's metrics, the first the one every summary uses (older reports: classification)."""
    return results.get("metrics") or ["accuracy", "macro_f1"]


def _fmt(x, digits=3):
    return "–" if x is None else f"{x:.{digits}f}"


def _table(results: dict) -> list[str]:
    names = list(results["domains"])
    methods = [m for m in LABELS if m in next(iter(results["domains"].values()))]
    shown = _metrics(results)[:2]
    lines = ["| method | " + " | ".join(names) + " | average |", "|---|" + "---|" * (len(names) + 1)]
    for m in methods:
        cells = [" / ".join(f"{results['domains'][n][m][k]:.3f}" for k in shown) for n in names]
        avg = " / ".join(f"{results['average'][m][k]:.3f}" for k in shown)
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + f" | {avg} |")
    return lines


def _gain_table(results: dict) -> list[str]:
    names = list(results["domains"])
    methods = [m for m in LABELS if m in next(iter(results["gain_recovered"].values()))]
    lines = ["| method | " + " | ".join(names) + " | mean | of average gain |", "|---|" + "---|" * (len(names) + 2)]
    for m in methods:
        cells = [_fmt(results["gain_recovered"][n][m], 2) for n in names]
        avg = results["average"][m]
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + f" | {_fmt(avg['gain_recovered'], 2)} | "
                     f"{_fmt(avg['gain_recovered_of_average'], 2)} |")
    return lines


def _weights_lines(results: dict) -> list[str]:
    lines = []
    for held, row in results["domains"].items():
        lines.append(f"- **{held}** held out:")
        for m in (m for m in LABELS if m in row and "weights" in row[m]):
            w = ", ".join(f"{n} {v:+.3f}" for n, v in row[m]["weights"].items())
            params = ", ".join(f"{k} {v:.4g}" for k, v in row[m]["params"].items())
            lines.append(f"  - {m}: {w} (residual {row[m]['residual']:.3f}{', ' + params if params else ''})")
    return lines


def _timing_lines(results: dict) -> list[str]:
    t = results["timing"]
    lines = ["| held-out domain | adaptation (represent + search + weights + compose), s | SFT training, s |", "|---|---|---|"]
    for held, per_method in t["adapt_seconds"].items():
        adapt = np.mean(list(per_method.values()))
        reused = " (cached from an earlier run)" if t["train_reused"].get(held) else ""
        lines.append(f"| {held} | {adapt:.2f} | {t['train_seconds'][held]:.1f}{reused} |")
    lines.append("")
    lines.append(f"Whole benchmark: {t['total_seconds']:.0f} s wall-clock.")
    return lines


def plot_transfer(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = results["transfer"]
    names = tr["sources"]
    metric = METRIC_NAMES.get(tr.get("metric", "accuracy"), tr.get("metric"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, key, title, cmap in ((axes[0], "distance", "squared distance: target z (test) to source z (train)", "viridis_r"),
                                 (axes[1], "scores", f"{metric} of the single source LoRA on the target", "magma")):
        m = np.array(tr[key])
        im = ax.imshow(m, cmap=cmap)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("target domain")
        ax.set_ylabel("source domain (adapter)")
        ax.set_title(title, fontsize=9)
        for i in range(len(names)):
            for j in range(len(names)):
                light = (m[i, j] - m.min()) > 0.5 * (m.max() - m.min())  # readable on either end of the map
                dark_cell = light if key == "distance" else not light
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8, color="white" if dark_cell else "black")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("Does representation similarity predict transfer?")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_weights(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    helds = list(results["domains"])
    methods = [m for m in LABELS if m in results["domains"][helds[0]] and "weights" in results["domains"][helds[0]][m]]
    fig, axes = plt.subplots(1, len(helds), figsize=(3.2 * len(helds), 3.6), squeeze=False)
    for ax, held in zip(axes[0], helds):
        sources = list(results["domains"][held][methods[0]]["weights"])
        width = 0.8 / len(methods)
        for k, m in enumerate(methods):
            w = results["domains"][held][m]["weights"]
            ax.bar(np.arange(len(sources)) + k * width, [w.get(s, 0.0) for s in sources], width, label=m)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(np.arange(len(sources)) + 0.4 - width / 2, sources, rotation=30, ha="right")
        ax.set_title(f"held out: {held}", fontsize=9)
    axes[0][0].set_ylabel("weight")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def require_plotting() -> None:
    """Refuse up front, not after an hour of work, when the plots cannot be drawn."""
    from ..errors import LoradbError

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise LoradbError("the report's plots need matplotlib: `pip install 'loradb[eval]'`") from None


FEW_SHOT_METHODS = ("learned", "lorahub", "scratch")


def _few_shot_lines(results: dict) -> list[str]:
    fs = results.get("few_shot")
    if not fs:
        return []
    shots = list(next(iter(fs.values())))
    lines = ["## Few-shot composition", "",
             "Accuracy on the held-out test sets, averaged over held-out domains, with k labeled examples per label "
             "from the held-out domain's training split. learned = softmax weights trained by gradient "
             "(arXiv 2402.15414), lorahub = gradient-free box-constrained weights (LoraHub-style), scratch = a new "
             "LoRA trained on the same examples. Zero-shot rows for comparison: uniform "
             f"{results['average']['uniform']['accuracy']:.3f}, pre-trained {results['average']['pretrained']['accuracy']:.3f}.",
             "", "| shots per label | " + " | ".join(FEW_SHOT_METHODS) + " |", "|---|" + "---|" * len(FEW_SHOT_METHODS)]
    for n in shots:
        cells = [f"{np.mean([fs[d][n][m]['accuracy'] for d in fs]):.3f}" for m in FEW_SHOT_METHODS]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "Per held-out domain:", ""]
    for d, per in fs.items():
        lines.append(f"- {d}: " + "; ".join(f"{n} shots " + ", ".join(f"{m} {per[n][m]['accuracy']:.3f}" for m in FEW_SHOT_METHODS)
                                           for n in shots))
    return lines + ["", "![few-shot](few_shot.png)", ""]


def plot_few_shot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fs = results["few_shot"]
    shots = list(next(iter(fs.values())))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m in FEW_SHOT_METHODS:
        ax.plot([int(n) for n in shots], [np.mean([fs[d][n][m]["accuracy"] for d in fs]) for n in shots], marker="o", label=m)
    for m, style in (("uniform", "--"), ("pretrained", ":"), ("sft", "-.")):
        ax.axhline(results["average"][m]["accuracy"], color="gray", ls=style, lw=1, label=f"{m} (zero-shot)" if m != "sft" else "SFT (full train)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("labeled examples per label")
    ax.set_ylabel("accuracy (mean over held-out domains)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict, out: Path) -> None:
    """results.json, report.md and the plots into `out`."""
    from ..export import json_ready

    require_plotting()

    (out / "results.json").write_text(json.dumps(results, indent=2, default=json_ready) + "\n")
    plot_transfer(results, out / "transfer.png")
    plot_weights(results, out / "weights.png")
    if results.get("few_shot"):
        plot_few_shot(results, out / "few_shot.png")
    hp = results.get("hyperparameters", {})
    metric = METRIC_NAMES[_metrics(results)[0]]
    hp_lines = [f"- {held}: " + ", ".join(f"{p} x{v['multiplier']:g} (LOO {metric} by multiplier: "
                                          + ", ".join(f"{k}: {a:.3f}" for k, a in v["scores"].items()) + ")"
                                          for p, v in chosen.items()) for held, chosen in hp.items() if chosen]
    md = [
        "# loradb benchmark: leave-one-domain-out zero-shot adaptation",
        "",
        f"Task: {results.get('task', 'classification')}. Base model: `{results['base']}`. Domains: `{results['domains_dir']}`.",
        *([f"Instruction: \"{results['instruction']}\""] if results.get("instruction") else []),
        "Each cell is " + " / ".join(METRIC_NAMES[k] for k in _metrics(results)[:2])
        + " on the held-out domain's test set. Composed rows use",
        "only the other domains' adapters and the held-out domain's *unlabeled* test texts.",
        "",
        *_table(results),
        "",
        "## Fraction of the SFT gain recovered",
        "",
        f"(method − pre-trained) / (SFT − pre-trained), {metric}; the last column uses the averages.",
        "",
        *_gain_table(results),
        "",
        "## Weights per held-out domain",
        "",
        *_weights_lines(results),
        "",
        *_few_shot_lines(results),
        "## Hyper-parameters (chosen on reference domains only)",
        "",
        *(hp_lines or ["- tuning off: automatic values"]),
        "",
        "## Time",
        "",
        *_timing_lines(results),
        "",
        "## Plots",
        "",
        "![distance vs transfer](transfer.png)",
        "",
        "![weights](weights.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(md))


def summary_lines(results: dict) -> list[str]:
    """The results table for a terminal."""
    names = list(results["domains"])
    methods = [m for m in LABELS if m in results["average"]]
    key = _metrics(results)[0]
    lines = [f"{METRIC_NAMES[key]:<24}" + "".join(f"{n:>10}" for n in names) + f"{'average':>10}{'gain':>8}"]
    for m in methods:
        gain = results["average"][m].get("gain_recovered_of_average")
        lines.append(f"{LABELS[m]:<24}" + "".join(f"{results['domains'][n][m][key]:>10.3f}" for n in names)
                     + f"{results['average'][m][key]:>10.3f}" + (f"{gain:>8.2f}" if gain is not None else f"{'':>8}"))
    lines.append(f"(gain: fraction of the average SFT gain over the pre-trained model; {results['timing']['total_seconds']:.0f} s in all)")
    return lines
