"""The benchmark report: results.json (every number), report.md (the paper's table shape)
and PNG plots (distance vs transfer, weights per method)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loradb.evaluate.config import FEW_SHOT_ROWS
from loradb.io.files import cache_dir
from loradb.evaluate.metrics import NLL

LABELS = {"pretrained": "Pre-trained (zero-shot)", "merge-all": "Merge all (uniform)",
          "merge-all-tuned": "Merge all (task arithmetic, tuned λ)", "random-k": "Random k (uniform)",
          "arrow": "Arrow (top-k, uniform)", "peft-arrow-k": "PEFT Arrow (per token, k retrieved)",
          "peft-arrow-all": "PEFT Arrow (per token, all)",
          "nearest": "Nearest", "uniform": "Uniform", "similarity": "Similarity", "linear": "Linear", "sparse": "Sparse",
          "convex": "Convex (bounded linear/sparse)", "default": "**Default: adapt or abstain**",
          "best-single": "Best single reference (oracle)", "sft": "SFT (oracle)"}
WIDE_UP_TO = 6  # domains as columns up to this many; beyond, one row per domain


METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "rougeL": "ROUGE-L", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2",
                NLL: "loss (teacher-forced, lower is better)"}


def _metrics(results: dict) -> list[str]:
    """The task's metrics, the first the one every summary uses (older reports: classification)."""
    return results.get("metrics") or ["accuracy", "macro_f1"]


def _shown(results: dict) -> list[str]:
    """The two metrics a table cell shows: the first two, or the first and the loss where there is one."""
    metrics = _metrics(results)
    return [metrics[0], NLL] if NLL in metrics else metrics[:2]


def _fmt(x, digits=3):
    return "–" if x is None else f"{x:.{digits}f}"


def _table(results: dict) -> list[str]:
    names = list(results["domains"])
    methods = [m for m in LABELS if m in next(iter(results["domains"].values()))]
    shown = _shown(results)
    cell = (lambda row: " / ".join(f"{row[k]:.3f}" for k in shown))
    if len(names) > WIDE_UP_TO:  # one row per held-out domain, methods as columns
        lines = ["| held out | family | " + " | ".join(LABELS[m] for m in methods) + " |", "|---|---|" + "---|" * len(methods)]
        families = results.get("families", {})
        for n in names:
            lines.append(f"| {n} | {families.get(n, '')} | " + " | ".join(cell(results["domains"][n][m]) for m in methods) + " |")
        lines.append("| **average** | | " + " | ".join(cell(results["average"][m]) for m in methods) + " |")
        return lines
    lines = ["| method | " + " | ".join(names) + " | average |", "|---|" + "---|" * (len(names) + 1)]
    for m in methods:
        cells = [cell(results["domains"][n][m]) for n in names]
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + f" | {cell(results['average'][m])} |")
    return lines


def _gain_table(results: dict) -> list[str]:
    names = list(results["domains"])
    methods = [m for m in LABELS if m in next(iter(results["gain_recovered"].values()))]
    if len(names) > WIDE_UP_TO:
        lines = ["| method | mean over domains | of average gain |", "|---|---|---|"]
        for m in methods:
            avg = results["average"][m]
            lines.append(f"| {LABELS[m]} | {_fmt(avg['gain_recovered'], 2)} | {_fmt(avg['gain_recovered_of_average'], 2)} |")
        return lines
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
            params = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row[m].get("params", {}).items())
            residual = f"residual {row[m]['residual']:.3f}" if row[m].get("residual") is not None else ""
            detail = ", ".join(x for x in (residual, params) if x)
            lines.append(f"  - {m}: {w}" + (f" ({detail})" if detail else ""))
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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_transfer(results: dict, path: Path) -> None:
    """Heatmap: the metric of each single source adapter on each target domain."""
    plt = _pyplot()
    tr = results["transfer"]
    names = tr["sources"]
    metric = METRIC_NAMES.get(tr.get("metric", "accuracy"), tr.get("metric"))
    m = np.array(tr["scores"], dtype=float)
    size = max(5.0, 0.32 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(m, cmap="magma")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7 if len(names) > 10 else 9)
    ax.set_yticks(range(len(names)), names, fontsize=7 if len(names) > 10 else 9)
    ax.set_xlabel("target domain")
    ax.set_ylabel("source domain (adapter)")
    if len(names) <= 10:
        lo, hi = np.nanmin(m), np.nanmax(m)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if (m[i, j] - lo) > 0.5 * (hi - lo) else "white")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(f"{metric} of each single LoRA on each domain's test set", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_map(results: dict, path: Path) -> None:
    """PCA of every domain's training prototype, coloured by family, with each held-out target's test z."""
    plt = _pyplot()
    mp, families = results["map"], results.get("families", {})
    fams = sorted(set(families.get(n, n) for n in mp["references"]))
    colours = {f: plt.get_cmap("tab20")(i % 20) for i, f in enumerate(fams)}
    fig, ax = plt.subplots(figsize=(8, 6.5))
    for n, (x, y) in mp["references"].items():
        ax.scatter(x, y, color=colours[families.get(n, n)], s=40, edgecolor="black", lw=0.4)
        ax.annotate(n, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    for n, (x, y) in mp["targets"].items():
        ax.scatter(x, y, color=colours[families.get(n, n)], marker="x", s=40)
        rx, ry = mp["references"][n]
        ax.plot([x, rx], [y, ry], color="gray", lw=0.5, ls=":")
    for f in fams:
        ax.scatter([], [], color=colours[f], label=f)
    ax.legend(fontsize=7, title="family (o training z, x test z)", title_fontsize=7, loc="best")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("Prototypes z of every domain (raw mean features), first two principal components", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_k_sweep(results: dict, path: Path) -> None:
    plt = _pyplot()
    sweep = results["k_sweep"]
    metric = METRIC_NAMES[_metrics(results)[0]]
    methods = list(next(iter(sweep.values())))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m in methods:
        ks = list(next(iter(sweep.values()))[m])
        ax.plot([int(k) for k in ks], [np.mean([sweep[d][m][k] for d in sweep]) for k in ks], marker="o", label=m)
    for m, style in (("merge-all", "--"), ("pretrained", ":"), ("sft", "-.")):
        if m in results["average"]:
            ax.axhline(results["average"][m][_metrics(results)[0]], color="gray", ls=style, lw=1, label=LABELS[m])
    ax.set_xlabel("k (adapters retrieved)")
    ax.set_ylabel(f"{metric} (mean over held-out domains)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _retrieval_lines(results: dict) -> list[str]:
    summary = results.get("retrieval_summary")
    if not summary or not summary["keys"]:
        return []
    metric = _metrics(results)[0]
    spearman = any("spearman" in v for v in summary["keys"].values())
    chosen = summary["chosen"]
    counts = {k: sum(1 for v in chosen.values() if v == k) for k in set(chosen.values())}
    method = results["config"].get("key_method", "similarity")
    lines = ["## Retrieval keys", "",
             f"Every key on every held-out fold: family precision@5 of its ranking (the share of the 5 nearest "
             f"references that are of the held-out domain's family) and {METRIC_NAMES[metric]} of the {method} "
             f"composition at k = {results['config']['k']}"
             + (", and the Spearman correlation between -d^2 and single-adapter transfer" if spearman else "") + ".",
             "Default key per fold, chosen on that fold's references only: "
             + ", ".join(f"{k} ({n} folds)" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])) + ".", "",
             "| key | precision@5 | " + METRIC_NAMES[metric] + (" | Spearman |" if spearman else " |"),
             "|---|---|---|" + ("---|" if spearman else "")]
    for k, v in summary["keys"].items():
        lines.append(f"| {k} | {v['precision@5']:.3f} | {v[metric]:.3f} |" + (f" {_fmt(v.get('spearman'))} |" if spearman else ""))
    lines.append(f"| arrow (weight space) | {summary['arrow_precision']:.3f} | "
                 f"{results['average']['arrow'][metric]:.3f} (uniform) |" + (" – |" if spearman else ""))
    return lines + ["", "![prototype map](map.png)", ""]


def _k_sweep_lines(results: dict) -> list[str]:
    sweep = results.get("k_sweep")
    if not sweep:
        return []
    methods = list(next(iter(sweep.values())))
    ks = list(next(iter(sweep.values()))[methods[0]])
    metric = METRIC_NAMES[_metrics(results)[0]]
    lines = ["## Accuracy against k", "", f"{metric}, mean over held-out domains, the fold's default key, automatic "
             "lambdas.", "", "| method | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for m in methods:
        lines.append(f"| {LABELS[m]} | " + " | ".join(f"{np.mean([sweep[d][m][k] for d in sweep]):.3f}" for k in ks) + " |")
    return lines + ["", "![k sweep](k_sweep.png)", ""]


def plot_weights(results: dict, path: Path) -> None:
    plt = _pyplot()
    helds = list(results["domains"])[:WIDE_UP_TO]  # the first folds: one panel each
    methods = [m for m in ("nearest", "uniform", "similarity", "linear", "sparse", "convex") if m in results["domains"][helds[0]]]
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
    from loradb.errors import LoradbError

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise LoradbError("the report's plots need matplotlib: `pip install 'loradb[eval]'`") from None


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
             "", "| shots per label | " + " | ".join(FEW_SHOT_ROWS) + " |", "|---|" + "---|" * len(FEW_SHOT_ROWS)]
    for n in shots:
        cells = [f"{np.mean([fs[d][n][m]['accuracy'] for d in fs]):.3f}" for m in FEW_SHOT_ROWS]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "Per held-out domain:", ""]
    for d, per in fs.items():
        lines.append(f"- {d}: " + "; ".join(f"{n} shots " + ", ".join(f"{m} {per[n][m]['accuracy']:.3f}" for m in FEW_SHOT_ROWS)
                                           for n in shots))
    return lines + ["", "![few-shot](few_shot.png)", "", *_few_shot_groups_lines(results)]


def _few_shot_groups_lines(results: dict) -> list[str]:
    """Few-shot, fairly: per group, each few-shot row against scratch on the same shots and
    against the group's best zero-shot row, with 95% paired intervals."""
    summary = results.get("few_shot_summary")
    if not summary:
        return []
    lines = ["### Few-shot against scratch and the best zero-shot row, per group", "",
             "[a, b] is the 95% paired bootstrap interval of the difference. The best zero-shot row is the one with the "
             "group's best mean (chosen with the labels: a bar, not a method).", ""]
    for n, per_group in summary.items():
        for group, entry in per_group.items():
            best = entry["best_zero_shot"]
            lines += [f"**{n} shots per label, {group}** ({len(entry['targets'])} targets; best zero-shot row: "
                      f"{LABELS.get(best, best).strip('*')})", "",
                      *_diff_table(entry["rows"], "accuracy", {"scratch": "vs scratch", best: "vs best zero-shot"}), ""]
    return lines


def plot_few_shot(results: dict, path: Path) -> None:
    plt = _pyplot()
    fs = results["few_shot"]
    shots = list(next(iter(fs.values())))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m in FEW_SHOT_ROWS:
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


def _diff_ci(d: dict, between: str = " ") -> str:
    """A difference with its 95% interval: '+0.056 [+0.037, +0.074]'."""
    return f"{d['diff']:+.3f}{between}[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"


def _diff_table(rows: dict, metric: str, columns: dict[str, str]) -> list[str]:
    """A Markdown table of each row's mean and its differences (with 95% intervals) to the
    rows named in `columns` (row -> column title); a cell is empty where a row has none."""
    return [f"| row | {metric} | " + " | ".join(columns.values()) + " |", "|---|---|" + "---|" * len(columns),
            *(f"| {LABELS.get(row, row)} | {stats['mean']:.3f} | "
              + " | ".join(_diff_ci(stats[f"vs {b}"]) if f"vs {b}" in stats else "" for b in columns) + " |"
              for row, stats in rows.items())]


def _groups_lines(results: dict) -> list[str]:
    """The library case: each group's mean per row, with the 95% paired bootstrap interval of
    the difference to merge-all (plain and tuned) and to the pre-trained model."""
    summary = results.get("groups_summary")
    if not summary:
        return []
    metric = METRIC_NAMES[_metrics(results)[0]]
    lines = ["## The library case: targets with siblings and orphans", "",
             "Groups fixed from the domain files alone: a target *with siblings* has another domain of its family with "
             "the same label set (or instruction) among the references; an *orphan* has none. Mean "
             f"{metric} over the group's targets; [a, b] is the 95% paired bootstrap interval of the difference "
             "(examples resampled within each target).", ""]
    columns = {"merge-all": "vs merge-all", "merge-all-tuned": "vs merge-all (tuned)", "pretrained": "vs pre-trained"}
    for group, entry in summary.items():
        lines += [f"**{group}** ({len(entry['targets'])}: {', '.join(entry['targets'])})", "",
                  *_diff_table(entry["rows"], metric, columns), ""]
        if group in results.get("groups_summary_nll", {}):  # generation: the loss of every scored pair's target
            lines += [f"{group}, {METRIC_NAMES[NLL]} of the reference targets on every scored pair:", "",
                      *_diff_table(results["groups_summary_nll"][group]["rows"], "loss", columns), ""]
    if results.get("orphan_folds"):
        lines += [f"Held out with their whole family left out of the library (orphans by construction): "
                  f"{', '.join(results['orphan_folds'])}.", ""]
    lines += _scale_lines(results)
    abstained = [n for n, row in results["domains"].items() if row.get("default", {}).get("abstained")]
    lines += [f"The default pipeline abstained (kept the base model) on {len(abstained)} target(s)"
              + (f": {', '.join(abstained)}." if abstained else "."), ""]
    return lines


def _scale_lines(results: dict) -> list[str]:
    """The update sizes each fold chose by leave-one-out over its references (evaluate/scale.py)."""
    chosen = {n: h["scale"] for n, h in results.get("hyperparameters", {}).items() if h.get("scale")}
    if not chosen:
        return []
    scales = [c["default"]["scale"] for c in chosen.values()]
    lambdas = [str(c["merge-all"]["lambda"]) for c in chosen.values()]

    def count(values: list) -> str:
        return ", ".join(f"{v} ×{values.count(v)}" for v in sorted(set(values), key=str))

    return [f"Update sizes chosen by leave-one-out over each fold's references (never the target's labels): the default "
            f"pipeline's scale s {count(scales)}; merge-all's λ per adapter {count(lambdas)} (average: 1/n).", ""]


def _adapter_lines(results: dict) -> list[str]:
    """Every adapter's own held-out score and gain over the base (what it has to give)."""
    records = {n: a for n, a in results.get("adapters", {}).items() if "validation" in a}
    if not records:
        return []
    lines = ["## The adapters", "", "Each trained with early stopping on a held-out share of its training split: "
             "the base model's score there, the adapter's best, and the epochs run.", "",
             "| adapter | held-out examples | base | adapter | gain | best epoch / run |", "|---|---|---|---|---|---|"]
    for name, a in records.items():
        v = a["validation"]
        lines.append(f"| {name} | {v['examples']} | {v['base']:.3f} | {v['best']:.3f} | {v['gain']:+.3f} | "
                     f"{v['best_epoch']} / {v['epochs_run']} |")
    return lines + [""]


def shown_folder(path: str) -> str:
    """A domains folder as a report names it: under loradb's cache, its place there (what
    `loradb data` makes on any machine); elsewhere its own name, not this machine's path."""
    folder = Path(path)
    try:
        return str(folder.resolve().relative_to(cache_dir().resolve()))
    except ValueError:
        return folder.name


def _missing_lines(results: dict) -> list[str]:
    """A partial collection says which domains it lacks and why, before any figure."""
    missing = results.get("missing_domains") or {}
    if not missing:
        return []
    return [f"**A partial collection:** {len(missing)} domain(s) left out because a source could not be had; "
            "every figure below is over the domains that were built.", "",
            *(f"- {name}: {why}" for name, why in sorted(missing.items())), ""]


def write_report(results: dict, out: Path) -> None:
    """results.json, report.md and the plots into `out`."""
    from loradb.io.files import to_json

    require_plotting()

    (out / "results.json").write_text(to_json(results) + "\n")
    plots = ["![weights](weights.png)", ""]
    if "transfer" in results:
        plot_transfer(results, out / "transfer.png")
        plots += ["![single-adapter transfer](transfer.png)", ""]
    plot_weights(results, out / "weights.png")
    if "map" in results:
        plot_map(results, out / "map.png")
    if results.get("k_sweep"):
        plot_k_sweep(results, out / "k_sweep.png")
    if results.get("few_shot"):
        plot_few_shot(results, out / "few_shot.png")
    hp = results.get("hyperparameters", {})
    metric = METRIC_NAMES[_metrics(results)[0]]
    lambdas = {held: {p: v for p, v in chosen.items() if "multiplier" in v} for held, chosen in hp.items()}  # not the scale
    hp_lines = [f"- {held}: " + ", ".join(f"{p} x{v['multiplier']:g} (LOO {metric} by multiplier: "
                                          + ", ".join(f"{k}: {a:.3f}" for k, a in v["scores"].items()) + ")"
                                          for p, v in chosen.items()) for held, chosen in lambdas.items() if chosen]
    md = [
        "# loradb benchmark: leave-one-domain-out zero-shot adaptation",
        "",
        f"Task: {results.get('task', 'classification')}. Base model: `{results['base']}`. Domains: `{shown_folder(results['domains_dir'])}`.",
        *([f"Instruction: \"{results['instruction']}\""] if results.get("instruction") else []),
        "Each cell is " + " / ".join(METRIC_NAMES[k] for k in _shown(results))
        + " on the held-out domain's test set. Composed rows use",
        "only the other domains' adapters and the held-out domain's *unlabeled* test texts.",
        "",
        *_missing_lines(results),
        *_table(results),
        "",
        *_groups_lines(results),
        *_adapter_lines(results),
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
        *_retrieval_lines(results),
        *_k_sweep_lines(results),
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
        *plots,
    ]
    (out / "report.md").write_text("\n".join(md))


def summary_lines(results: dict) -> list[str]:
    """The results table for a terminal (with many domains: the averages only; report.md has each)."""
    names = list(results["domains"])
    wide = len(names) <= WIDE_UP_TO
    shown = names if wide else []
    methods = [m for m in LABELS if m in results["average"]]
    key = _metrics(results)[0]
    lines = [f"{METRIC_NAMES[key]:<24}" + "".join(f"{n:>10}" for n in shown) + f"{'average':>10}{'gain':>8}"]
    for m in methods:
        gain = results["average"][m].get("gain_recovered_of_average")
        lines.append(f"{LABELS[m]:<24}" + "".join(f"{results['domains'][n][m][key]:>10.3f}" for n in shown)
                     + f"{results['average'][m][key]:>10.3f}" + (f"{gain:>8.2f}" if gain is not None else f"{'':>8}"))
    for group, entry in (results.get("groups_summary") or {}).items():
        lines.append(f"{group} ({len(entry['targets'])} targets): " + "; ".join(
            f"{LABELS.get(r, r).strip('*')} {st['mean']:.3f}"
            + "".join(f" ({_diff_ci(st[f'vs {b}'], f' vs {b}, 95% ')})" for b in ("merge-all", "merge-all-tuned")
                      if r == "default" and f"vs {b}" in st)
            for r, st in entry["rows"].items()
            if r in ("merge-all", "merge-all-tuned", "default", "sft", "best-single", "random-k")))
    if results.get("missing_domains"):
        lines.append(f"partial collection: left out {', '.join(sorted(results['missing_domains']))} (a source could not be had)")
    lines.append(f"(gain: fraction of the average SFT gain over the pre-trained model; {results['timing']['total_seconds']:.0f} s in all"
                 + ("" if wide else f"; averages over {len(names)} held-out domains") + ")")
    return lines
