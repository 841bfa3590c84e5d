"""The seed-000 paper table: simple ER / ER + reservoir / ER + reservoir + LARS on your LSTM
regression tasks (e.g. channel prediction S1 -> S2 -> S3).

Data file: ``torch.save`` of a list of ``(x, y)`` tuples, one per task in training order, with
``x`` of shape ``(N, T, F_in)`` (sequences) and ``y`` of shape ``(N, F_out)``; or
``{"tasks": [{"name": "S1", "x": ..., "y": ...}, ...]}`` to name the tasks. Each task is split
80/20 into train/test. Scores are NMSE (or MSE) on the test split, lower is better; BWT and
forgetting follow the sign convention of :mod:`tau2.continual_learning.metrics`.

    python -m tau2.continual_learning.supervised.paper_table --make-demo demo_tasks.pt
    python -m tau2.continual_learning.supervised.paper_table --data demo_tasks.pt --markdown table.md

Defaults: LSTM (hidden 64), Adam lr 1e-3, gradient clipping 1.0, 5 epochs per task, batch 32,
buffer 200, 3 seeds; every one is a flag (``--help``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from tau2.continual_learning.supervised.data import load_task_file, synthetic_channel_tasks
from tau2.continual_learning.supervised.experiment import markdown_table, mean_std, run_continual
from tau2.continual_learning.supervised.models import LSTMRegressor

logger = logging.getLogger(__name__)

PAPER_METHODS = (
    ("ER (simple)", "er"),
    ("ER + reservoir", "er_reservoir"),
    ("ER + reservoir + LARS", "er_lars"),
)


def write_demo_file(path: str | Path, num_sequences: int = 400, seed: int = 0) -> Path:
    """A synthetic channel-prediction task file (scenarios S1, S2, S3)."""
    tasks = synthetic_channel_tasks(num_sequences=num_sequences, seed=seed)
    path = Path(path)
    torch.save({"tasks": [{"name": n, "x": x, "y": y} for n, x, y in tasks]}, path)
    return path


def paper_table(
    data: str | Path,
    epochs: int = 5,
    seeds: int = 3,
    memory_size: int = 200,
    batch_size: int = 32,
    lr: float = 1e-3,
    hidden_size: int = 64,
    score: str = "nmse",
) -> tuple[list[dict[str, Any]], str]:
    """Run the three methods on ``data``; returns the rows and the markdown table."""
    tasks = load_task_file(data)
    x0, y0 = tasks[0].x_train, tasks[0].y_train
    if x0.dim() != 3 or y0.dim() != 2:
        raise ValueError(
            f"{data}: LSTM regression needs x of shape (N, T, F) and y of shape (N, F_out), "
            f"got x {tuple(x0.shape)} and y {tuple(y0.shape)}"
        )
    names = [t.name for t in tasks]
    rows = []
    for label, algorithm in PAPER_METHODS:
        config = {
            "task_type": "regression",
            "regression_score": score,
            "optimizer": "adam",
            "lr": lr,
            "grad_clip_norm": 1.0,
            "cl_algorithm": algorithm,
            "cl_params": {"memory_size": memory_size},
            "progress_bar": False,
            "eval_every_epoch": False,
        }
        runs = [
            run_continual(
                lambda: LSTMRegressor(x0.shape[2], hidden_size, y0.shape[1]),
                tasks,
                config,
                epochs,
                batch_size,
                s,
            )
            for s in range(seeds)
        ]
        metrics = [r["metrics"]["regression"] for r in runs]
        acc, bwt, fgt = (mean_std([m[k] for m in metrics]) for k in ("ACC", "BWT", "forgetting"))
        row: dict[str, Any] = {
            "method": label,
            "cl_algorithm": algorithm,
            "score": score,
            "acc_mean": acc[0],
            "acc_std": acc[1],
            "acc_db": 10 * math.log10(acc[0])
            if score == "nmse" and acc[0] and acc[0] > 0
            else None,
            "bwt_mean": bwt[0],
            "forgetting_mean": fgt[0],
            "wall_s_mean": mean_std([r["wall_s"] for r in runs])[0],
        }
        for j, name in enumerate(names):
            row[f"final_{name}"] = mean_std([m["final_scores"][j] for m in metrics])[0]
        rows.append(row)
    columns = [
        ("method", "Method"),
        ("acc", f"avg final {score.upper()}"),
        ("acc_db", "dB"),
        ("bwt_mean", "BWT"),
        ("forgetting_mean", "forgetting"),
        *[(f"final_{n}", f"{n} final") for n in names],
    ]
    table = markdown_table(
        [{**r, "acc": f"{r['acc_mean']:.4f} ± {r['acc_std']:.4f}"} for r in rows], columns, digits=4
    )
    return rows, table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", help="task file (see above)")
    parser.add_argument(
        "--make-demo",
        metavar="PATH",
        help="write a synthetic channel-prediction task file and exit",
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--memory-size", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--score", choices=("nmse", "mse"), default="nmse")
    parser.add_argument("--markdown", help="write the table to this path too")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    if args.make_demo:
        print(f"wrote {write_demo_file(args.make_demo)}")
        return
    if not args.data:
        parser.error("--data is required (or --make-demo PATH to create a demo file)")
    rows, table = paper_table(
        args.data,
        args.epochs,
        args.seeds,
        args.memory_size,
        args.batch_size,
        args.lr,
        args.hidden_size,
        args.score,
    )
    for row in rows:
        print(json.dumps(row))
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)


if __name__ == "__main__":
    main()
