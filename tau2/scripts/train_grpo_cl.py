"""Continual GRPO training from the command line.

``python -m tau2.scripts.train_grpo_cl [--flag value ...] [--config run.yaml]``

Every :class:`~tau2.continual_learning.grpo.config.GRPOConfig` field is a flag (TRL's included);
``--config`` reads a YAML file of the same fields (flags given on the command line win). With no
flags it runs the default CPU job: the embedded SmolLM2-135M-Instruct model on skill tasks,
airline -> retail -> telecom, with experience replay. ``--resume_from_checkpoint DIR`` continues
a run from its last domain checkpoint (``DIR`` = ``<output_dir>/checkpoints`` or one checkpoint);
``--branch_from_checkpoint DIR`` starts this run's ``--cl_algorithm`` from another run's
domain-end checkpoint (``DIR`` = ``.../checkpoints/end-of-domain-NN``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import TYPE_CHECKING

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tau2.continual_learning  # noqa: F401  (import hygiene first)

if TYPE_CHECKING:
    from tau2.continual_learning.grpo.config import GRPOConfig


def parse_config(argv: list[str] | None = None) -> GRPOConfig:
    """Build a GRPOConfig from flags and an optional YAML ``--config`` file. A bad value exits
    as a usage error (status 2) with the config's message: field, value and what is allowed."""
    from trl import TrlParser

    from tau2.continual_learning.grpo.config import ConfigError, GRPOConfig

    parser = TrlParser((GRPOConfig,), prog="python -m tau2.scripts.train_grpo_cl")
    try:
        (config,) = parser.parse_args_and_config(args=argv)
    except ConfigError as err:
        parser.error(str(err))
    return config


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = parse_config(argv)

    from tau2.continual_learning.grpo.config import ConfigError
    from tau2.continual_learning.grpo.trainer import GRPOTrainer

    try:
        trainer = GRPOTrainer(config)
    except ConfigError as err:  # what only the model tells: prompts longer than its window
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        metrics = trainer.train()  # loads a resume_from_checkpoint or branch_from_checkpoint
    finally:
        trainer.close()
    summary = {
        k: metrics.get(k)
        for k in (
            "domains",
            "baseline",
            "accuracy_matrix",
            "ACC",
            "BWT",
            "FWT",
            "forgetting",
            "wall_time_s",
        )
    }
    print(json.dumps(summary, indent=2))
    for episodes in trainer.last_eval_episodes.values():
        best = max(episodes, key=lambda e: e.reward)
        print(
            f"--- what the model did on {best.task.key} (reward {best.reward}, {best.termination_reason}):"
        )
        print(best.completion_text.strip()[:1500])
    print(
        f"Outputs written to {config.output_dir}: metrics.json, training_log.csv, accuracy_matrix.png"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
