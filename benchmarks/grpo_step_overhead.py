"""Time per GRPO step: our continual trainer vs bare TRL ``GRPOTrainer``, same workload.

Workload: telecom skill tasks, one agent turn each (single-turn), the tiny random model with the
real SmolLM2 tokenizer, ``--groups`` task groups of ``--group-size`` completions per step, up to
``--max-new-tokens`` new tokens. Bare TRL gets the very prompts our runner renders (decoded to
text) and generates them itself; ours goes through ``rollout_func``, the batched EpisodeRunner,
tau2's evaluators, the trajectory buffer and the CL hooks. Both sides train on the same reward,
:func:`reward` of the completion's text (the tiny model earns no tau2 reward, and our trainer
leaves out the passes of groups without signal, so a reward only bare TRL's groups vary in would
compare unequal work); ours still pays for tau2's scoring. Both run at the same precision
(``--bf16``: bf16 autocast where the CPU supports it, as the library's default, else float32)
and train the same parameters: a fresh LoRA adapter of our config's rank, alpha, dropout and
target modules (``--full`` on both sides: every weight).
The first ``--warmup`` steps are excluded. Prints one JSON line: ``ours_s_per_step``,
``trl_s_per_step``, ``ratio`` (goal <= 1.10) and the settings.

    python benchmarks/grpo_step_overhead.py [--steps 6] [--groups 2] [--group-size 4]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import zlib

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tau2.continual_learning  # noqa: F401  (import hygiene first)
from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.continual_learning import SequentialCL
from tau2.continual_learning.grpo.config import bf16_supported
from tau2.continual_learning.grpo.trl_trainer import REWARD_FIELD
from tau2.continual_learning.model_loading import load_tokenizer, wrap_lora
from tau2.continual_learning.rollout import EpisodeRunner, HFPolicy, load_tasks
from tau2.continual_learning.tiny_model import build_tiny_model


class StepTimer(SequentialCL):
    """Records the wall time at the end of every optimisation step."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[float] = []

    def post_step_hook(self, trainer, domain) -> None:
        self.stamps.append(time.perf_counter())


def reward(completion: str) -> float:
    """Both sides' reward: 0 or 1 from a hash of the completion's text, so nearly every group
    of distinct completions has unequal rewards (signal) on both sides alike."""
    return float(zlib.crc32(completion.encode()) % 2)


def per_step(stamps: list[float], start: float, warmup: int) -> float:
    times = [b - a for a, b in zip([start, *stamps[:-1]], stamps, strict=True)]
    kept = times[warmup:]
    return sum(kept) / len(kept)


def run_ours(args, tokenizer, out: str) -> float:
    config = GRPOConfig(
        output_dir=out,
        domains=["telecom"],
        cl_algorithm="sequential",
        max_steps_per_domain=args.steps,
        batch_size_per_gpu=args.groups,
        num_samples_per_prompt=args.group_size,
        micro_batch_size=None,  # one forward/backward pass per step, as bare TRL's below
        eval_tasks_per_domain=1,
        max_turns=1,
        max_new_tokens_per_turn=args.max_new_tokens,
        report_to=[],
        seed=0,
        bf16=args.bf16,
        use_peft=not args.full,
    )
    trainer = GRPOTrainer(config, model=build_tiny_model(tokenizer), tokenizer=tokenizer)
    timer = StepTimer()
    trainer.cl_algorithm = timer
    tau2_rollout = trainer.rollout

    def rollout(prompts, trl_trainer=None):  # the step's episodes, rewarded as bare TRL's
        out = tau2_rollout(prompts, trl_trainer)
        out[REWARD_FIELD] = [reward(tokenizer.decode(c)) for c in out["completion_ids"]]
        return out

    trainer.rollout = rollout
    start = time.perf_counter()
    trainer.train()  # the baseline evaluation falls into the first (warm-up) interval
    return per_step(timer.stamps, start, args.warmup)


def run_trl(args, tokenizer, out: str) -> float:
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    tasks = load_tasks("telecom", "train", "skills")
    with EpisodeRunner(
        HFPolicy(build_tiny_model(tokenizer), tokenizer),
        max_turns=1,
        max_new_tokens_per_turn=1,
        scoring_workers=0,
    ) as runner:
        prompts = [
            tokenizer.decode(e.prompt_ids) for e in runner.run(tasks[: args.groups * args.steps])
        ]

    stamps: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

    def rewards(prompts, completions, **kwargs):
        return [reward(c) for c in completions]

    config = trl.GRPOConfig(
        output_dir=out,
        max_steps=args.steps,
        per_device_train_batch_size=args.groups * args.group_size,
        num_generations=args.group_size,
        max_completion_length=args.max_new_tokens,
        learning_rate=1e-5,
        bf16=args.bf16,
        use_cpu=not torch.cuda.is_available(),  # transformers refuses bf16 on a CPU without it
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
    )
    model = build_tiny_model(tokenizer)
    if not args.full:  # the adapter our trainer puts on its model
        ours = GRPOConfig(output_dir=out)
        model = wrap_lora(
            model, ours.lora_r, ours.lora_alpha, ours.lora_dropout, ours.lora_target_modules
        )
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=[rewards],
        args=config,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
        callbacks=[Timer()],
    )
    start = time.perf_counter()
    trainer.train()
    return per_step(stamps, start, args.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1, help=">= 1: ours includes set-up")
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--bf16",
        choices=("true", "false"),
        help="bf16 autocast on both sides (default: where the CPU supports it)",
    )
    parser.add_argument("--full", action="store_true", help="train every weight on both sides")
    args = parser.parse_args()
    args.bf16 = bf16_supported() if args.bf16 is None else args.bf16 == "true"
    tokenizer = load_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        trl_s = run_trl(args, tokenizer, os.path.join(tmp, "trl"))
        ours_s = run_ours(args, tokenizer, os.path.join(tmp, "ours"))
    print(
        json.dumps(
            {
                "ours_s_per_step": round(ours_s, 4),
                "trl_s_per_step": round(trl_s, 4),
                "ratio": round(ours_s / trl_s, 3),
                "steps": args.steps,
                "warmup": args.warmup,
                "groups": args.groups,
                "group_size": args.group_size,
                "max_new_tokens": args.max_new_tokens,
                "bf16": args.bf16,
                "lora": not args.full,
            }
        )
    )


if __name__ == "__main__":
    main()
