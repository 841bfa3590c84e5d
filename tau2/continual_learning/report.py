"""Human-readable outputs of a continual run: the statistics banner, CSV logs, the heatmap."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RULE = "=" * 80


def statistics_banner(domain: str, stats: dict[str, Any]) -> str:
    """The replay statistics block printed after each domain (docs: 'Monitoring Replay')."""
    lines = [RULE, f"Experience Replay Statistics for {domain}", RULE]
    if "total_replay_samples" in stats:
        lines.append(f"Total replay samples used: {stats['total_replay_samples']}")
        lines.append("Replay samples per domain:")
        lines += [f"  {d}: {n}" for d, n in stats.get("replay_samples_per_domain", {}).items()]
    if "buffer_sizes" in stats:
        lines.append("Buffer sizes:")
        lines += [f"  {d}: {n}" for d, n in stats["buffer_sizes"].items()]
    lines.append(RULE)
    return "\n".join(lines)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON via a temporary file and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, default=str)
    os.replace(tmp, path)


def write_rows_csv(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> None:
    """Write dict rows as CSV with the union of their keys as header."""
    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (figures go to files; no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> None:
    """Lay out ``fig``, write it to ``path`` and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy_matrix(
    matrix: Sequence[Sequence[float | None]],
    domains: Sequence[str],
    path: str | os.PathLike[str],
    baseline: Sequence[float] | None = None,
) -> None:
    """Heatmap of R[i][j] (rows: trained through domain i; columns: evaluated on j)."""
    plt = _pyplot()
    import numpy as np

    rows = ([list(baseline)] if baseline is not None else []) + [list(r) for r in matrix]
    labels = (["untrained"] if baseline is not None else []) + [
        f"after {d}" for d in domains[: len(matrix)]
    ]
    data = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(domains), 1.2 + 0.6 * len(rows)))
    image = ax.imshow(data, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(domains)), labels=list(domains))
    ax.set_yticks(range(len(labels)), labels=labels)
    ax.set_xlabel("evaluated on")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if not np.isnan(data[i, j]):
                ax.text(
                    j,
                    i,
                    f"{data[i, j]:.2f}",
                    ha="center",
                    va="center",
                    color="w" if data[i, j] < 0.6 else "k",
                )
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title("pass^1 accuracy matrix")
    _save(fig, path)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux ``ru_maxrss`` is in KiB)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024


def plot_scores_over_training(metrics: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """The forgetting picture: each domain's score (with its 95% interval) before training and
    after each domain of the sequence."""
    plt = _pyplot()

    domains = metrics["domains"]
    stages = ["untrained", *[f"after {d}" for d in domains[: len(metrics["accuracy_matrix"])]]]
    fig, ax = plt.subplots(figsize=(1.8 + 1.4 * len(stages), 3.6))
    for j, domain in enumerate(domains):
        means = [metrics["baseline"][j], *[row[j] for row in metrics["accuracy_matrix"]]]
        cells = [row[j] for row in metrics.get("score_intervals", [])]
        low = [means[0], *[c["low"] for c in cells]] if cells else means
        high = [means[0], *[c["high"] for c in cells]] if cells else means
        xs = list(range(len(means)))
        ax.plot(xs, means, marker="o", label=domain)
        ax.fill_between(xs, low, high, alpha=0.15)
    ax.set_xticks(range(len(stages)), labels=stages)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("pass^1 (95% interval)")
    ax.set_title("every domain's score after every domain")
    ax.legend(fontsize="small")
    _save(fig, path)


def plot_training_signal(
    step_stats: Sequence[dict[str, Any]], path: str | os.PathLike[str]
) -> None:
    """Per optimizer step: mean training reward and the share of informative GRPO groups."""
    plt = _pyplot()

    fig, axes = plt.subplots(2, 1, figsize=(7, 4.6), sharex=True)
    for domain in dict.fromkeys(s["domain"] for s in step_stats):
        rows = [s for s in step_stats if s["domain"] == domain]
        steps = [s["global_step"] + 1 for s in rows]
        axes[0].plot(steps, [s["reward_mean"] for s in rows], marker="o", label=domain)
        axes[1].plot(steps, [s["informative_share"] for s in rows], marker="o", label=domain)
    axes[0].set_ylabel("mean reward")
    axes[1].set_ylabel("informative groups")
    axes[1].set_xlabel("optimizer step")
    for ax in axes:
        ax.set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize="small")
    _save(fig, path)


PHASES = (
    ("before", "before"),
    ("after_warm_start", "after warm start"),
    ("after_grpo", "after GRPO"),
)
"""The phases of a domain's training in ``phase_scores``, with their labels."""


def plot_phase_scores(
    phase_scores: dict[str, dict[str, float]], domains: Sequence[str], path: str | os.PathLike[str]
) -> None:
    """Phase attribution: per trained domain, its score before its training, after its warm
    start (where one ran and was scored) and after its GRPO steps, as grouped bars."""
    plt = _pyplot()

    trained = [d for d in domains if d in phase_scores]
    width = 0.8 / len(PHASES)
    fig, ax = plt.subplots(figsize=(2.4 + 1.6 * len(trained), 3.4))
    for k, (phase, label) in enumerate(PHASES):
        xs = [i + (k - 1) * width for i, d in enumerate(trained) if phase in phase_scores[d]]
        values = [phase_scores[d][phase] for d in trained if phase in phase_scores[d]]
        bars = ax.bar(xs, values, width, label=label, color=f"C{k}")
        ax.bar_label(bars, fmt="%.2f", fontsize="x-small")
    ax.set_xticks(range(len(trained)), labels=trained)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("pass^1 on the domain")
    ax.set_title("what each phase learned")
    ax.legend(fontsize="small")
    _save(fig, path)


def phase_sentences(metrics: dict[str, Any]) -> list[str]:
    """One sentence per trained domain saying what each phase added to its score
    (``phase_scores``; ``warm_start`` tells a domain learned from reward alone from one whose
    warm start was not scored separately)."""
    lines = []
    for domain in metrics["domains"]:
        phases = metrics.get("phase_scores", {}).get(domain)
        if not phases or "before" not in phases or "after_grpo" not in phases:
            continue
        before, grpo = phases["before"], phases["after_grpo"]
        start = f"**{domain}**: {before:.3f} before its training; "
        warm = metrics.get("warm_start", {}).get(domain) or {}
        if "after_warm_start" in phases:
            after = phases["after_warm_start"]
            text = (
                f"the warm start added {after - before:+.3f} (to {after:.3f}), GRPO "
                f"{grpo - after:+.3f} (to {grpo:.3f})."
            )
        elif warm.get("steps"):
            text = f"warm start and GRPO together added {grpo - before:+.3f} (to {grpo:.3f})."
        else:
            text = f"no warm start; GRPO alone added {grpo - before:+.3f} (to {grpo:.3f})."
        lines.append(start + text)
    return lines


def mean_scores_over_training(
    runs: Sequence[dict[str, Any]],
) -> dict[str, dict[str, list[float]]]:
    """Per algorithm and domain, the mean over seeds of the domain's score at each stage of one
    sequence: untrained (``baseline``), then after each domain (``accuracy_matrix`` rows).
    ``runs`` are run lines of one sequence; lines without a matrix or baseline are left out."""
    import statistics

    curves: dict[str, dict[str, list[float]]] = {}
    for algorithm in dict.fromkeys(r["algorithm"] for r in runs):
        lines = [
            r
            for r in runs
            if r["algorithm"] == algorithm and r.get("accuracy_matrix") and r.get("baseline")
        ]
        if not lines:
            continue
        stages = [[r["baseline"], *r["accuracy_matrix"]] for r in lines]
        curves[algorithm] = {
            domain: [statistics.fmean(run[i][j] for run in stages) for i in range(len(stages[0]))]
            for j, domain in enumerate(lines[0]["domains"])
        }
    return curves


def plot_forgetting_benchmark(runs: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """``benchmarks/forgetting.py``'s figure: per sequence (a column), forgetting and ACC of
    each algorithm, a bar at the mean over seeds with a +-1 population-std whisker and one dot
    per seed; below them, every domain but the last, its mean score over the sequence per
    algorithm (:func:`mean_scores_over_training`: what each algorithm keeps). ``runs`` are the
    benchmark's run lines (``sequence``, ``algorithm``, ``seed``, ``forgetting``, ``ACC``, and
    for the curves ``domains``, ``baseline`` and ``accuracy_matrix``)."""
    import statistics

    plt = _pyplot()

    sequences = list(dict.fromkeys(r["sequence"] for r in runs))
    if not sequences:
        raise ValueError("plot_forgetting_benchmark: no run lines to plot")
    widest = max(len({r["algorithm"] for r in runs if r["sequence"] == s}) for s in sequences)
    fig, axes = plt.subplots(
        3,
        len(sequences),
        figsize=(1.2 + max(1.3 * widest, 3.6) * len(sequences), 8.6),
        squeeze=False,
    )
    for column, sequence in enumerate(sequences):
        lines = [r for r in runs if r["sequence"] == sequence]
        algorithms = list(dict.fromkeys(r["algorithm"] for r in lines))
        domains = lines[0].get("domains")
        title = " -> ".join(domains) if domains else sequence
        for row, metric in enumerate(("forgetting", "ACC")):
            ax = axes[row][column]
            for x, algorithm in enumerate(algorithms):
                values = [
                    r[metric]
                    for r in lines
                    if r["algorithm"] == algorithm and r[metric] is not None
                ]
                if not values:
                    continue
                ax.bar(
                    x,
                    statistics.fmean(values),
                    yerr=statistics.pstdev(values),
                    color=f"C{x}",
                    alpha=0.45,
                    capsize=4,
                )
                ax.scatter([x] * len(values), values, color=f"C{x}", s=14, zorder=3)
            ax.axhline(0, color="grey", linewidth=0.8)
            ax.set_xticks(range(len(algorithms)), labels=algorithms, fontsize="small")
            ax.set_ylabel(metric)
            if row == 0:
                seeds = sorted({r["seed"] for r in lines})
                ax.set_title(f"{sequence}: {title}\n{len(seeds)} seeds", fontsize="medium")
        _plot_kept_scores(axes[2][column], algorithms, mean_scores_over_training(lines))
    _save(fig, path)


def _plot_kept_scores(
    ax: Any, algorithms: list[str], curves: dict[str, dict[str, list[float]]]
) -> None:
    """The benchmark figure's third row: earlier domains' mean scores, stage by stage."""
    styles = ("-", "--", ":", "-.")
    stages = 0
    for x, algorithm in enumerate(algorithms):
        domains = list(curves.get(algorithm, {}))
        for k, domain in enumerate(domains[:-1]):  # the last domain is never trained over
            values = curves[algorithm][domain]
            stages = len(values)
            ax.plot(
                range(len(values)),
                values,
                color=f"C{x}",
                linestyle=styles[k % len(styles)],
                marker="o",
                markersize=3,
                label=f"{domain} ({algorithm})",
            )
    if not stages:
        ax.set_axis_off()
        return
    domains = next(iter(curves.values()))
    labels = ["untrained", *(f"after {d}" for d in domains)]
    ax.set_xticks(range(stages), labels=labels, fontsize="x-small", rotation=20)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("mean pass^1")
    ax.legend(fontsize="xx-small")


def _fmt(value: Any, interval: Any = None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:+.3f}" if isinstance(value, float) and value < 0 else f"{value:.3f}"
    if interval:
        text += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
    return text


def write_run_report(metrics: dict[str, Any], output_dir: str | os.PathLike[str]) -> Path:
    """``report.md`` with the pictures people look at first: the accuracy matrix heatmap, the
    forgetting picture, phase attribution (figure and one sentence per domain), the training
    signal per step, the CL metrics with 95% bootstrap
    intervals, wall time and peak memory. Figures go next to it."""
    out = Path(output_dir)
    domains = metrics["domains"]
    plot_accuracy_matrix(
        metrics["accuracy_matrix"], domains, out / "accuracy_matrix.png", metrics["baseline"]
    )
    plot_scores_over_training(metrics, out / "scores_over_training.png")
    lines = [
        f"# Continual run: {' -> '.join(domains)}",
        "",
        f"Algorithm `{metrics.get('cl_algorithm')}`, model `{metrics.get('model_name_or_path')}`, "
        f"task source `{metrics.get('task_source')}`, seed {metrics.get('seed')}; "
        f"{metrics.get('global_steps')} optimizer steps, wall time {metrics.get('wall_time_s', 0.0):.0f} s, "
        f"peak RSS {metrics.get('peak_rss_mb', 0.0):.0f} MB.",
        "",
        "| metric | value [95% interval] |",
        "|---|---|",
    ]
    intervals = metrics.get("intervals") or {}
    for name in ("ACC", "BWT", "FWT", "forgetting"):
        lines.append(f"| {name} | {_fmt(metrics.get(name), intervals.get(name))} |")
    header = "| after \\ on | " + " | ".join(domains) + " |"
    lines += [
        "",
        "Accuracy matrix (pass^1, 95% Wilson interval):",
        "",
        header,
        "|---" * (len(domains) + 1) + "|",
    ]
    lines.append("| untrained | " + " | ".join(f"{b:.3f}" for b in metrics["baseline"]) + " |")
    cells = metrics.get("score_intervals") or [[None] * len(r) for r in metrics["accuracy_matrix"]]
    for domain, row, row_cells in zip(domains, metrics["accuracy_matrix"], cells, strict=False):
        shown = [
            _fmt(v, (c["low"], c["high"]) if c else None)
            for v, c in zip(row, row_cells, strict=True)
        ]
        lines.append(f"| {domain} | " + " | ".join(shown) + " |")
    lines += [
        "",
        "![accuracy matrix](accuracy_matrix.png)",
        "",
        "![scores over training](scores_over_training.png)",
    ]
    if metrics.get("phase_scores"):
        plot_phase_scores(metrics["phase_scores"], domains, out / "phase_scores.png")
        lines += [
            "",
            "What each phase added to its domain's score (before its training, after its warm "
            "start, after its GRPO steps):",
            "",
            *(f"- {sentence}" for sentence in phase_sentences(metrics)),
            "",
            "![phase scores](phase_scores.png)",
        ]
    if metrics.get("step_stats"):
        plot_training_signal(metrics["step_stats"], out / "training_signal.png")
        lines += [
            "",
            "Training reward and informative-group share per step:",
            "",
            "![training signal](training_signal.png)",
        ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
