"""Split-digits benchmark of every tensor-level CL method.

Setting: scikit-learn digits split into 5 tasks of 2 classes, MLP 64-256-256-10, SGD
(lr 0.05, momentum 0.8), 5 epochs per task, batch 32, buffer 200 samples (the generative
method stores a VAE instead), 3 seeds. One training run is evaluated both class-IL (argmax
over all 10 classes) and task-IL (logits masked to the task's classes).

Prints one JSON line per (method, scenario) with ``method``, ``scenario``, ``acc_mean``,
``acc_std``, ``bwt_mean``, ``forgetting_mean``, ``wall_s_mean`` (plus ``bwt_std``,
``forgetting_std``, ``seeds``), then one summary line with the total wall time.

    python benchmarks/split_digits.py                      # all methods, 3 seeds
    python benchmarks/split_digits.py --methods naive er --seeds 1 --markdown table.md
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import torch

from tau2.continual_learning.supervised import MLP, VIBNet, split_digits
from tau2.continual_learning.supervised.experiment import markdown_table, mean_std, run_continual

BUFFER = 200

# method label -> (cl_algorithm, cl_params, model kind)
METHODS: dict[str, tuple[str, dict[str, Any], str]] = {
    "naive": ("naive", {}, "mlp"),
    "er": ("er", {"memory_size": BUFFER}, "mlp"),
    "er_reservoir": ("er_reservoir", {"memory_size": BUFFER}, "mlp"),
    "er_reservoir_lars": ("er_lars", {"memory_size": BUFFER}, "mlp"),
    "brs": ("brs", {"memory_size": BUFFER}, "mlp"),
    "iba": ("iba", {"memory_size": BUFFER, "augment": "noise", "augment_strength": 0.05}, "mlp"),
    "distillation": ("distill", {"memory_size": BUFFER}, "mlp"),
    "generative_replay": (
        "generative_replay",
        {
            "generator": {"type": "vae", "hidden_dims": [128, 64], "latent_dim": 16},
            "generator_final_steps": 200,
        },
        "mlp",
    ),
    "vib_replay": ("vib_replay", {"memory_size": BUFFER}, "vib"),
    "mir": ("mir", {"memory_size": BUFFER}, "mlp"),
    "kmeans_memory": ("kmeans_memory", {"memory_size": BUFFER}, "mlp"),
}


def model_for(kind: str) -> torch.nn.Module:
    if kind == "vib":
        return VIBNet(64, 10, hidden_sizes=(256,), bottleneck_dim=100, beta_1=1e-3, beta_2=1e-3)
    return MLP(64, [256, 256], 10)


def run_method(label: str, seeds: list[int], epochs: int, batch_size: int) -> list[dict[str, Any]]:
    algorithm, params, kind = METHODS[label]
    config = {
        "lr": 0.05,
        "momentum": 0.8,
        "cl_algorithm": algorithm,
        "cl_params": params,
        "eval_scenarios": ["class_il", "task_il"],
        "progress_bar": False,
        "eval_every_epoch": False,
    }
    runs = [
        run_continual(lambda: model_for(kind), split_digits(seed=s), config, epochs, batch_size, s)
        for s in seeds
    ]
    rows = []
    for scenario in ("class_il", "task_il"):
        acc, bwt, fgt = (
            mean_std([r["metrics"][scenario][k] for r in runs])
            for k in ("ACC", "BWT", "forgetting")
        )
        rows.append(
            {
                "method": label,
                "scenario": scenario,
                "acc_mean": acc[0],
                "acc_std": acc[1],
                "bwt_mean": bwt[0],
                "bwt_std": bwt[1],
                "forgetting_mean": fgt[0],
                "forgetting_std": fgt[1],
                "wall_s_mean": mean_std([r["wall_s"] for r in runs])[0],
                "seeds": len(seeds),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is fastest for this size)"
    )
    parser.add_argument("--markdown", help="also write a markdown table to this path")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    rows = []
    for label in args.methods:
        for row in run_method(label, list(range(args.seeds)), args.epochs, args.batch_size):
            print(json.dumps(row), flush=True)
            rows.append(row)
    total = time.perf_counter() - start
    print(
        json.dumps(
            {
                "benchmark": "split_digits",
                "total_wall_s": round(total, 1),
                "methods": len(args.methods),
            }
        )
    )
    if args.markdown:
        columns = [
            ("method", "method"),
            ("scenario", "scenario"),
            ("acc", "ACC"),
            ("bwt_mean", "BWT"),
            ("forgetting_mean", "forgetting"),
            ("wall_s_mean", "wall s / run"),
        ]
        table_rows = [{**r, "acc": f"{r['acc_mean']:.3f} ± {r['acc_std']:.3f}"} for r in rows]
        with open(args.markdown, "w") as fh:
            fh.write(markdown_table(table_rows, columns))
    return rows


if __name__ == "__main__":
    main()
