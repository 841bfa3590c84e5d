"""torchrun entry point of tests/grpo/test_distributed.py: the command-line job
(``tau2.scripts.train_grpo_cl``), with what each rank's GRPO steps trained on written to
``<output_dir>/rollouts/rank-R.json`` (one entry per step: TRL's token fields and rewards, as
``GRPOTrainer.rollout`` returned them), so that a single-process run can replay them.

``python -m torch.distributed.run --nproc_per_node=2 tests/grpo/record_rollouts.py --flag ...``
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tau2.continual_learning.grpo.trainer import GRPOTrainer
from tau2.scripts import train_grpo_cl


def main(argv: list[str]) -> int:
    recorded: list[dict] = []
    rollout = GRPOTrainer.rollout

    def recording_rollout(self, prompts, trl_trainer=None):
        episodes = rollout(self, prompts, trl_trainer)
        recorded.append(episodes)
        return episodes

    GRPOTrainer.rollout = recording_rollout
    status = train_grpo_cl.main(argv)
    out = Path(argv[argv.index("--output_dir") + 1]) / "rollouts"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank-{os.environ['RANK']}.json").write_text(json.dumps(recorded))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
