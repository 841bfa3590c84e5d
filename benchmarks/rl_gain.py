"""What GRPO alone learns: new domains from the evaluator's reward, no demonstrations.

Per seed (``seed`` and ``skills_seed``), one run warm-starts ``airline`` on its gold
demonstrations (no GRPO step: ``max_steps_per_domain=0``), so the policy knows the call
format. Every (domain, variant) run of that seed then starts from those weights (the same LoRA
adapter, a fresh optimizer) and trains the domain by GRPO only
(``warm_start_demos_per_domain=0``): ``retail``, ``telecom`` and ``airline_v2`` by default
(``--domains``: any skill domain or API-migration variant). Its start score is the warm-started
policy's test score on the domain, its end score the score after ``--steps`` GRPO steps, and in
between the domain's test split is scored every ``--eval_every`` steps: a learning curve with
the episodes rolled out so far on the x axis.

Variants (``--variants``, default ``recipe``): ``grpo`` (the library's GRPO settings),
``clip_higher`` (``epsilon_high=0.28``, DAPO's clip-higher), ``partial_credit``
(``partial_credit_weight=0.25``: training reward = tau2 reward + 0.25 x partial credit;
evaluation stays binary), ``curriculum`` (``curriculum=pass_rate``) and ``recipe`` (all three).
Settings are the library defaults except the domain, ``cl_algorithm`` (``sequential``), what a
variant sets and what ``--set`` overrides.

Output, printed (and flushed) as each run finishes and appended to
``<output_dir>/rl_gain.jsonl``:

* per seed, one ``"warm_start": true`` line: ``seed``, ``domain`` (airline), ``untrained`` and
  ``warm_started`` (airline pass^1), ``wall_s``;
* per run: ``domain``, ``seed``, ``variant``, ``start_score``, ``end_score``, ``gain``,
  ``steps``, ``episodes`` (rolled out, dynamic sampling's extra groups included), ``wall_s``
  (training and scoring), ``curve`` (``[{"step", "episodes", "score"}, ...]`` from step 0 to
  the last), ``informative_share`` (mean over steps of the share of trained groups with
  unequal rewards: near 0 says why a domain did not move), ``overrides``;
* then per (domain, variant), ``"summary": true``: ``seeds``, and for ``gain``,
  ``start_score`` and ``end_score`` the mean, the sample standard deviation over seeds
  (``_std``) and the 95% t-interval of the mean over seeds (``_ci95``; ``null`` with one seed).

    python benchmarks/rl_gain.py                                  # 3 domains x 3 seeds
    python benchmarks/rl_gain.py --quick                          # smoke test
    python benchmarks/rl_gain.py --domains telecom --seeds 0 --variants grpo recipe \\
        --steps 40 --eval_every 10 --set learning_rate=3e-4
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

from _cli import SEQUENCE_FIELDS, add_override_argument
from _results import ResultLines
from learning_signal import adapter_state, load_adapter_state
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import tau2.continual_learning  # noqa: F401  (import hygiene first)
from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.grpo.algorithms.sequential import SequentialCL
from tau2.continual_learning.rollout.tasks.skills import SKILL_DOMAINS

logger = logging.getLogger("benchmarks.rl_gain")

WARM_START_DOMAIN = "airline"
"""The domain whose demonstrations teach the call format before every run."""
DOMAINS = ("retail", "telecom", "airline_v2")
SEEDS = (0, 1, 2)
VARIANTS: dict[str, dict[str, Any]] = {
    "grpo": {},
    "clip_higher": {"epsilon_high": 0.28},
    "partial_credit": {"partial_credit_weight": 0.25},
    "curriculum": {"curriculum": "pass_rate"},
    "recipe": {"epsilon_high": 0.28, "partial_credit_weight": 0.25, "curriculum": "pass_rate"},
}
"""Variant -> the GRPOConfig fields that make it."""
DEFAULT_VARIANTS = ("recipe",)
STEPS = 30
EVAL_EVERY = 5
QUICK: dict[str, Any] = {"eval_tasks_per_domain": 4, "warm_start_demos_per_domain": 4}
"""``--quick``'s overrides (plus seed 0, ``retail``, ``grpo``, 2 steps scored after each)."""
SUMMARISED = ("gain", "start_score", "end_score")
RESULTS_FILE = "rl_gain.jsonl"


class LearningCurve(SequentialCL):
    """Sequential training that scores the domain's test split every ``every`` steps (as the
    run's own evaluation does: same tasks, same sampling), before the last step's: the run's
    final evaluation is that point."""

    def __init__(self, every: int, last_step: int) -> None:
        super().__init__()
        self.every = every
        self.last_step = last_step
        self.points: list[tuple[int, float]] = []
        """(global step, test score) after every ``every``-th step."""
        self.evaluator: Any = None
        """The trainer's evaluator (the view algorithms get does not score test splits)."""

    def post_step_hook(self, trainer: Any, domain: str) -> None:
        step = trainer.global_step
        if step % self.every == 0 and step < self.last_step:
            self.points.append((step, self.evaluator.domain(domain).mean))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--domains",
        nargs="+",
        choices=SKILL_DOMAINS,
        help=f"domains learned by GRPO alone (default: {' '.join(DOMAINS)})",
    )
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0 1 2")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        help=f"default: {' '.join(DEFAULT_VARIANTS)}",
    )
    parser.add_argument("--steps", type=int, help=f"GRPO steps per run (default: {STEPS})")
    parser.add_argument(
        "--eval_every",
        type=int,
        help=f"score the domain's test split every N steps (default: {EVAL_EVERY})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: seed 0, retail, grpo, 2 steps scored after each, {QUICK} "
        "(explicit flags and --set win)",
    )
    add_override_argument(
        parser,
        reserved=SEQUENCE_FIELDS,
        hint=" (use --domains, --seeds, --steps or --output_dir)",
    )
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/rl_gain"))
    return parser


def curve_points(
    start: float, points: list[tuple[int, float]], end: float, metrics: dict[str, Any], group: int
) -> list[dict[str, Any]]:
    """The learning curve: step 0 (``start``), the recorded ``points``, the last step
    (``end``); each with the episodes rolled out up to that step (per ``step_stats``: groups
    trained plus dynamic sampling's extra groups, ``group`` episodes each)."""
    per_step = [
        (s.get("groups", 0) + s.get("extra_groups", 0)) * group for s in metrics["step_stats"]
    ]
    steps = len(per_step)
    scored = [(0, start), *points, (steps, end)] if steps else [(0, start)]
    return [
        {"step": step, "episodes": sum(per_step[:step]), "score": score} for step, score in scored
    ]


def run_line(
    domain: str,
    seed: int,
    variant: str,
    overrides: dict[str, Any],
    metrics: dict[str, Any],
    curve: LearningCurve,
    group: int,
    wall_s: float,
) -> dict[str, Any]:
    """A run's result line from its metrics and its learning curve."""
    start, end = metrics["baseline"][0], metrics["accuracy_matrix"][-1][0]
    points = curve_points(start, curve.points, end, metrics, group)
    stats = metrics["step_stats"]
    return {
        "domain": domain,
        "seed": seed,
        "variant": variant,
        "start_score": start,
        "end_score": end,
        "gain": end - start,
        "steps": len(stats),
        "episodes": points[-1]["episodes"],
        "wall_s": wall_s,
        "curve": points,
        "informative_share": (
            statistics.fmean(s["informative_share"] for s in stats) if stats else None
        ),
        "overrides": overrides,
    }


def seed_interval(values: list[float]) -> tuple[float, float, list[float] | None]:
    """Mean, sample standard deviation and 95% t-interval of the mean over seeds (``None``
    with fewer than two)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0, None
    from scipy.stats import t

    std = statistics.stdev(values)
    half = t.ppf(0.975, len(values) - 1) * std / len(values) ** 0.5
    return mean, std, [mean - half, mean + half]


def summary(domain: str, variant: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The (domain, variant) line: mean, seed-std and 95% interval over its seeds."""
    row: dict[str, Any] = {
        "summary": True,
        "domain": domain,
        "variant": variant,
        "seeds": [line["seed"] for line in lines],
    }
    for name in SUMMARISED:
        row[f"{name}_mean"], row[f"{name}_std"], row[f"{name}_ci95"] = seed_interval(
            [line[name] for line in lines]
        )
    return row


def train(
    config: GRPOConfig, weights: dict[str, Any] | None = None, algorithm: Any = None
) -> tuple[GRPOTrainer, dict[str, Any], float]:
    """One run from ``weights`` (:func:`adapter_state`; ``None``: the model as loaded) with
    ``algorithm`` (``None``: the config's): the trainer, its metrics and its wall time."""
    shutil.rmtree(config.output_dir, ignore_errors=True)
    began = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # TRL prints its logs: stdout is ours
        trainer = GRPOTrainer(config)
        if weights is not None:
            load_adapter_state(trainer.model, weights)
        if algorithm is not None:
            trainer.cl_algorithm = algorithm
        if isinstance(algorithm, LearningCurve):
            algorithm.evaluator = trainer.evaluator
        metrics = trainer.train()
    shutil.rmtree(Path(config.output_dir) / "checkpoints", ignore_errors=True)
    return trainer, metrics, round(time.perf_counter() - began, 1)


def one_domain_config(
    fields: dict[str, Any], domain: str, seed: int, output_dir: Path
) -> GRPOConfig:
    """A one-domain run of the skill tasks of ``domain`` (drawn from ``seed``, as the run's own
    seed) with no continual algorithm, the other fields from ``fields``."""
    return GRPOConfig(
        **{
            **fields,
            "domains": [domain],
            "cl_algorithm": "sequential",
            "task_source": "skills",
            "seed": seed,
            "skills_seed": seed,
            "output_dir": str(output_dir),
        }
    )


def warm_start(config: GRPOConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """A seed's warm start (``config``: one domain, ``max_steps_per_domain=0``): the trained
    weights (:func:`adapter_state`) and its ``"warm_start": true`` line."""
    trainer, metrics, wall_s = train(config)
    weights = adapter_state(trainer.model)
    del trainer  # the model goes before the next run loads its own
    gc.collect()
    line = {
        "warm_start": True,
        "seed": config.seed,
        "domain": config.domains[0],
        "untrained": metrics["baseline"][0],
        "warm_started": metrics["accuracy_matrix"][0][0],
        "wall_s": wall_s,
    }
    return weights, line


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; returns every line it printed."""
    parser = build_parser()
    args = parser.parse_args(argv)
    domains = list(dict.fromkeys(args.domains or (["retail"] if args.quick else DOMAINS)))
    seeds = list(dict.fromkeys(args.seeds or ([0] if args.quick else SEEDS)))
    variants = list(dict.fromkeys(args.variants or (["grpo"] if args.quick else DEFAULT_VARIANTS)))
    steps = args.steps if args.steps is not None else (2 if args.quick else STEPS)
    every = args.eval_every if args.eval_every is not None else (1 if args.quick else EVAL_EVERY)
    if steps < 1:
        parser.error(f"--steps must be >= 1, got {steps}")
    if every < 1:
        parser.error(f"--eval_every must be >= 1, got {every}")
    common = json.loads(json.dumps({**(QUICK if args.quick else {}), **dict(args.overrides)}))

    def config(seed: int, domain: str, name: str, fields: dict[str, Any]) -> GRPOConfig:
        folder = args.output_dir / f"seed-{seed}" / domain / name
        return one_domain_config({**common, **fields}, domain, seed, folder)

    def warm_config(seed: int) -> GRPOConfig:
        return config(seed, WARM_START_DOMAIN, "warm_start", {"max_steps_per_domain": 0})

    def run_config(seed: int, domain: str, variant: str) -> GRPOConfig:
        fields = {**VARIANTS[variant], "max_steps_per_domain": steps}
        return config(seed, domain, variant, {**fields, "warm_start_demos_per_domain": 0})

    try:  # every config is checked before the first run starts
        for seed in seeds:
            warm_config(seed)  # GRPOConfig refuses a warm-start-only run without demonstrations
            for domain in domains:
                for variant in variants:
                    run_config(seed, domain, variant)
    except (TypeError, ValueError) as err:
        parser.error(str(err))

    results_lines = ResultLines(args.output_dir / RESULTS_FILE, logger)
    emit = results_lines.emit

    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    plan: list[tuple[int, str | None, str | None]] = []  # (seed, None, None): its warm start
    for seed in seeds:
        plan += [(seed, None, None), *((seed, d, v) for d in domains for v in variants)]
    with logging_redirect_tqdm(), tqdm(plan, desc="rl-gain runs", unit="run") as bar:
        for seed, domain, variant in bar:
            if domain is None:  # the seed's airline warm start
                bar.set_postfix_str(f"seed-{seed}/warm_start")
                weights, line = warm_start(warm_config(seed))
                emit(line)
                continue
            bar.set_postfix_str(f"seed-{seed}/{domain}/{variant}")
            cfg = run_config(seed, domain, variant)
            curve = LearningCurve(every, steps)
            trainer, metrics, wall_s = train(cfg, weights, curve)
            overrides = {**common, **VARIANTS[variant]}
            line = run_line(
                domain, seed, variant, overrides, metrics, curve,
                cfg.num_samples_per_prompt, wall_s,
            )  # fmt: skip
            results.setdefault((domain, variant), []).append(line)
            emit(line)
            logger.info(
                "seed %d %s %s: %.3f -> %.3f (%+.3f), %.0f s",
                seed, domain, variant, line["start_score"], line["end_score"],
                line["gain"], wall_s,
            )  # fmt: skip
            del trainer  # the model and optimizer go before the next run loads its own
            gc.collect()
    for (domain, variant), lines in results.items():
        emit(summary(domain, variant, lines))
    return results_lines.printed


if __name__ == "__main__":
    main()
