"""Experience-replay examples: ``python configs/replay_example.py MODE [GRPOConfig flags]``.

MODE is one of

* ``basic``    - ReplayCL (ratio 0.3, high-reward sampling);
* ``adaptive`` - AdaptiveReplayCL (ratio 0.2, moving within [0.1, 0.5]);
* ``custom``   - a user-defined CLAlgorithm subclass (selective high-reward replay);
* ``compare``  - sequential vs replay vs adaptive replay with the same seed; prints a table of
  ACC, BWT, FWT, forgetting and wall time and writes it as ``comparison.md`` and
  ``comparison.csv`` in ``--output_dir``.

Any further flags go to :class:`GRPOConfig`, e.g. ``--max_steps_per_domain 2
--eval_tasks_per_domain 4`` for a small run.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import tau2.continual_learning  # noqa: F401  (import hygiene first)
from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.continual_learning import AdaptiveReplayCL, ReplayCL
from tau2.continual_learning.report import write_rows_csv
from tau2.scripts.train_grpo_cl import parse_config

MODES = ("basic", "adaptive", "compare", "custom")


class SelectiveReplayCL(ReplayCL):
    """Replays only tasks whose stored trajectory scored above 0.7 (the docs' example)."""

    def _sample_replay_tasks(self, previous_domains, num_samples):
        samples = []
        for domain in previous_domains:
            domain_samples = self._trainer.trajectory_buffer.sample(
                domain, num_samples, strategy="high_reward"
            )
            samples.extend([s for s in domain_samples if s.reward > 0.7])
        return [s.task for s in samples[:num_samples]]


def run(config: GRPOConfig, algorithm=None) -> dict:
    trainer = GRPOTrainer(config)
    if algorithm is not None:
        trainer.cl_algorithm = algorithm
    return trainer.train()


def compare(flags: list[str], output_dir: Path) -> list[dict]:
    """Run the three algorithms with the same flags (hence the same seed)."""
    rows = []
    for name in ("sequential", "replay", "adaptive_replay"):
        sub = parse_config([*flags, "--cl_algorithm", name, "--output_dir", str(output_dir / name)])
        metrics = run(sub)
        rows.append(
            {
                "algorithm": name,
                "ACC": metrics["ACC"],
                "BWT": metrics["BWT"],
                "FWT": metrics["FWT"],
                "forgetting": metrics["forgetting"],
                "time_s": round(metrics["wall_time_s"], 1),
            }
        )
    return rows


def markdown_table(rows: list[dict]) -> str:
    def fmt(v):
        return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(r[h]) for h in header) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in MODES:
        print(
            f"usage: python configs/replay_example.py {{{'|'.join(MODES)}}} [GRPOConfig flags]",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    mode, flags = argv[0], argv[1:]
    if mode == "compare":
        out = Path(parse_config(["--output_dir", "outputs/replay_compare", *flags]).output_dir)
        rows = compare(flags, out)
        table = markdown_table(rows)
        (out / "comparison.md").write_text(table + "\n")
        write_rows_csv(out / "comparison.csv", rows)
        print(table)
        return 0
    defaults = {
        "basic": ["--cl_algorithm", "replay", "--replay_ratio", "0.3"],
        "adaptive": ["--cl_algorithm", "adaptive_replay", "--replay_ratio", "0.2"],
        "custom": ["--cl_algorithm", "replay"],
    }[mode]
    config = parse_config(["--output_dir", f"outputs/replay_{mode}", *defaults, *flags])
    algorithm = {
        "basic": ReplayCL(
            replay_ratio=config.replay_ratio,
            replay_strategy="high_reward",
            min_buffer_size=config.min_buffer_size,
        ),
        "adaptive": AdaptiveReplayCL(
            initial_replay_ratio=config.replay_ratio,
            max_replay_ratio=0.5,
            min_replay_ratio=0.1,
            adaptation_rate=0.1,
            forgetting_threshold=0.1,
        ),
        "custom": SelectiveReplayCL(
            replay_ratio=config.replay_ratio, min_buffer_size=config.min_buffer_size
        ),
    }[mode]
    metrics = run(config, algorithm)
    print(
        markdown_table(
            [{"algorithm": mode, **{k: metrics[k] for k in ("ACC", "BWT", "FWT", "forgetting")}}]
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
