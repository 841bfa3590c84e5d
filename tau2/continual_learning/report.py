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


def plot_accuracy_matrix(
    matrix: Sequence[Sequence[float | None]],
    domains: Sequence[str],
    path: str | os.PathLike[str],
    baseline: Sequence[float] | None = None,
) -> None:
    """Heatmap of R[i][j] (rows: trained through domain i; columns: evaluated on j)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
