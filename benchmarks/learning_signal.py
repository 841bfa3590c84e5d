"""What GRPO's settings add after the warm start, on one domain: learning rates, dynamic
sampling and guided groups, measured from one shared warm start.

Per seed (``seed`` and ``skills_seed``), one run warm-starts the domain (its gold
demonstrations, no GRPO step: ``max_steps_per_domain=0``) and scores the test split before and
after. Every variant then starts from those warm-started weights (the same LoRA adapter, a
fresh optimizer, as in a run), takes ``--steps`` GRPO steps with its settings and is scored
again. Variants therefore differ only in their GRPO settings: same warm start, same test tasks,
same rollout seed (a paired comparison; each variant's gain is its score minus the
warm-started score).

Variants (``--variants``, default all): ``default`` (the library's GRPO settings),
``lr_3e-5``, ``lr_3e-4``, ``lr_1e-3`` (``learning_rate``), ``dynamic_sampling``
(``dynamic_sampling_max_extra_groups=4``), ``guided_groups`` (``guided_groups=true``),
``temperature_1.5`` and ``temperature_2`` (the rollouts' sampling ``temperature``; TRL scores
the same tempered distribution).
Settings are the library defaults (the default job's) except the domain, ``cl_algorithm``
(``sequential``: one domain has nothing to replay), what a variant sets and what ``--set``
overrides.

Output, printed (and flushed) as each run finishes and appended to
``<output_dir>/learning_signal.jsonl``:

* per seed, one ``"warm_start": true`` line: ``domain``, ``seed``, ``untrained`` and
  ``warm_started`` (pass^1), ``wall_s``;
* per variant and seed: ``variant``, ``overrides`` (the variant's fields plus ``--set``),
  ``warm_started``, ``score``, ``gain`` (score - warm_started), ``steps``,
  ``informative_share`` (mean over steps of the share of trained groups with unequal rewards),
  ``informative_share_sampled`` (before dynamic sampling and guided groups),
  ``extra_groups`` and ``guided_groups`` (totals), ``wall_s`` (training and scoring);
* then per variant, ``"summary": true`` with the mean and population std over seeds of
  ``gain``, ``informative_share`` and ``wall_s``.

A gain within a standard deviation of another is noise: the test split has a few dozen tasks.

    python benchmarks/learning_signal.py                              # retail, seed 0
    python benchmarks/learning_signal.py --domain airline --seeds 0 1 --variants default lr_3e-4
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _cli import add_override_argument
from _results import ResultLines
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import tau2.continual_learning  # noqa: F401  (import hygiene first)
from tau2.continual_learning import GRPOConfig, GRPOTrainer

logger = logging.getLogger("benchmarks.learning_signal")

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "lr_3e-5": {"learning_rate": 3e-5},
    "lr_3e-4": {"learning_rate": 3e-4},
    "lr_1e-3": {"learning_rate": 1e-3},
    "dynamic_sampling": {"dynamic_sampling_max_extra_groups": 4},
    "guided_groups": {"guided_groups": True},
    "temperature_1.5": {"temperature": 1.5},
    "temperature_2": {"temperature": 2.0},
}
"""Variant -> the GRPOConfig fields that make it."""
RESERVED = ("domains", "seed", "skills_seed", "output_dir", "cl_algorithm", "max_steps_per_domain")
"""GRPOConfig fields the benchmark sets per run, so ``--set`` may not."""
RESULTS_FILE = "learning_signal.jsonl"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--domain", default="retail", help="the domain trained (default: retail)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), help="default: all, in this order"
    )
    parser.add_argument(
        "--steps", type=int, help="GRPO steps per variant (default: max_steps_per_domain's)"
    )
    add_override_argument(
        parser, reserved=RESERVED, hint=" (use --domain, --seeds, --steps or --output_dir)"
    )
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/learning_signal"))
    return parser


def variant_fields(name: str, steps: int) -> dict[str, Any]:
    """What a variant's run sets: its fields, ``steps`` GRPO steps and no warm start of its own
    (it starts from the shared one)."""
    return {**VARIANTS[name], "max_steps_per_domain": steps, "warm_start_demos_per_domain": 0}


def adapter_state(model: Any) -> dict[str, Any]:
    """The trained weights of ``model`` (its LoRA adapter, else every weight), copied."""
    from peft import PeftModel, get_peft_model_state_dict

    state = get_peft_model_state_dict(model) if isinstance(model, PeftModel) else model.state_dict()
    return {k: v.detach().clone() for k, v in state.items()}


def load_adapter_state(model: Any, state: dict[str, Any]) -> None:
    """Load what :func:`adapter_state` returned into ``model``."""
    from peft import PeftModel, set_peft_model_state_dict

    if isinstance(model, PeftModel):
        set_peft_model_state_dict(model, state)
    else:
        model.load_state_dict(state)


def train(
    config: GRPOConfig, start: tuple[dict[str, Any], tuple[list, list]] | None = None
) -> tuple[GRPOTrainer, dict[str, Any], float]:
    """One run: the trainer, its metrics and its wall time. ``start``: the weights to begin
    from (:func:`adapter_state`) and the untrained scores and rewards (not scored again)."""
    shutil.rmtree(config.output_dir, ignore_errors=True)
    began = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # TRL prints its logs: stdout is ours
        trainer = GRPOTrainer(config)
        if start is not None:
            weights, (trainer.baseline, trainer.baseline_rewards) = start
            load_adapter_state(trainer.model, weights)
        metrics = trainer.train()
    shutil.rmtree(Path(config.output_dir) / "checkpoints", ignore_errors=True)
    return trainer, metrics, round(time.perf_counter() - began, 1)


def variant_line(
    variant: str, seed: int, overrides: dict[str, Any], warm: float, metrics: dict, wall_s: float
) -> dict[str, Any]:
    """A variant's result line from its run's metrics."""
    stats = metrics["step_stats"]
    score = metrics["accuracy_matrix"][0][0]
    return {
        "domain": metrics["domains"][0],
        "seed": seed,
        "variant": variant,
        "overrides": overrides,
        "warm_started": warm,
        "score": score,
        "gain": score - warm,
        "steps": len(stats),
        "informative_share": statistics.fmean(s["informative_share"] for s in stats),
        "informative_share_sampled": statistics.fmean(
            s.get("informative_share_sampled", s["informative_share"]) for s in stats
        ),
        "extra_groups": sum(s.get("extra_groups", 0) for s in stats),
        "guided_groups": sum(s.get("guided_groups", 0) for s in stats),
        "wall_s": wall_s,
    }


def summary(variant: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and population std over seeds of a variant's gain, informative share and time."""
    row: dict[str, Any] = {"summary": True, "variant": variant, "seeds": [x["seed"] for x in lines]}
    for name in ("gain", "informative_share", "wall_s"):
        values = [x[name] for x in lines]
        row[f"{name}_mean"], row[f"{name}_std"] = (
            statistics.fmean(values),
            statistics.pstdev(values),
        )
    return row


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; returns every line it printed."""
    parser = build_parser()
    args = parser.parse_args(argv)
    variants = args.variants or list(VARIANTS)
    common = json.loads(json.dumps(dict(args.overrides)))
    steps = args.steps if args.steps is not None else GRPOConfig.max_steps_per_domain
    if steps < 1:
        parser.error(f"--steps must be >= 1, got {steps}")

    def config(seed: int, name: str, fields: dict[str, Any]) -> GRPOConfig:
        return GRPOConfig(
            **{
                **common,
                **fields,
                "domains": [args.domain],
                "cl_algorithm": "sequential",
                "seed": seed,
                "skills_seed": seed,
                "output_dir": str(args.output_dir / args.domain / f"seed-{seed}" / name),
            }
        )

    try:  # every config is checked before the first run starts
        for seed in args.seeds:
            warm_config = config(seed, "warm_start", {"max_steps_per_domain": 0})
            for name in variants:
                config(seed, name, variant_fields(name, steps))
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    if not warm_config.warm_start_demos_per_domain:
        parser.error("the shared warm start needs warm_start_demos_per_domain > 0")

    results_lines = ResultLines(args.output_dir / RESULTS_FILE, logger)
    emit = results_lines.emit

    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    plan = [(seed, name) for seed in args.seeds for name in ("warm_start", *variants)]
    with logging_redirect_tqdm(), tqdm(plan, desc="learning-signal runs", unit="run") as bar:
        for seed, name in bar:
            bar.set_postfix_str(f"seed-{seed}/{name}")
            if name == "warm_start":
                trainer, metrics, wall_s = train(config(seed, name, {"max_steps_per_domain": 0}))
                weights = adapter_state(trainer.model)
                baseline = (trainer.baseline, trainer.baseline_rewards)
                warm = metrics["accuracy_matrix"][0][0]
                emit(
                    {
                        "warm_start": True,
                        "domain": args.domain,
                        "seed": seed,
                        "untrained": metrics["baseline"][0],
                        "warm_started": warm,
                        "wall_s": wall_s,
                    }
                )
            else:
                fields = variant_fields(name, steps)
                trainer, metrics, wall_s = train(config(seed, name, fields), (weights, baseline))
                line = variant_line(name, seed, {**common, **VARIANTS[name]}, warm, metrics, wall_s)
                results[name].append(line)
                emit(line)
                logger.info("seed %d %s: gain %+.3f, %.0f s", seed, name, line["gain"], wall_s)
            del trainer  # the model and optimizer go before the next run loads its own
            gc.collect()
    for name in variants:
        emit(summary(name, results[name]))
    return results_lines.printed


if __name__ == "__main__":
    main()
