"""RL against supervised training on the same new domain: what each forgets of the old one.

Per seed (``seed`` and ``skills_seed``), one run warm-starts ``airline`` on its gold
demonstrations (``rl_gain.warm_start``: no GRPO step). From those weights the new domain
(``--new_domain``: ``airline_v2`` by default, the API-migration variant with the same tools and
renamed, re-shaped arguments; or ``retail``, ``telecom``) is then learned twice:

* ``sft``: supervised steps on the new domain's gold demonstrations, the library's warm-start
  machinery (``WarmStart.demonstrations`` and ``supervised_steps``) driven in chunks of
  ``--eval_every`` updates with one AdamW kept across chunks (``warm_start_learning_rate``,
  ``warm_start_batch_size`` demonstrations per update, the demonstrations cycled in seeded
  epochs);
* ``grpo``: GRPO steps from the evaluator's reward alone (``warm_start_demos_per_domain=0``),
  ``learning_rate`` and the other GRPO settings as configured.

With ``--sft_first N`` both methods start later: the warm-started weights first take ``N``
supervised updates on the new domain's demonstrations (as ``sft`` does), and ``sft`` and ``grpo``
go on from there. This is the switch from supervised training to RL once the policy solves some
new tasks (where reward alone finds nothing, as on ``airline_v2`` with its arguments hidden, a
policy that already succeeds sometimes gives GRPO groups with signal), and it compares what each
method forgets *from then on*.

Both take ``--updates`` optimizer updates and score the test splits of ``airline`` and the
new domain (greedy, as a run's evaluation does) before the first update and after every
``--eval_every``-th and the last. Settings are the library defaults under the interference
sequence's for ``airline_v2`` (``tool_arguments_in_prompt=False``, as in ``forgetting.py``:
with the arguments in the prompt the model reads each version's from it and nothing is
forgotten; ``NEW_DOMAIN_SETTINGS``), then ``--quick`` and ``--set``.

Output, printed (and flushed) as each run finishes and appended to
``<output_dir>/rl_vs_sft.jsonl``:

* per seed, the warm start's ``"warm_start": true`` line (as ``rl_gain.py``'s), and with
  ``--sft_first`` the shared supervised start's ``"sft_first": true`` line (``seed``,
  ``new_domain``, ``updates``, ``curve``, ``wall_s``);
* per run: ``method``, ``seed``, ``new_domain``, ``curve`` (``[{"updates", "new_score",
  "airline_score"}, ...]``), ``new_gain`` and ``forgetting`` (airline's score at update 0 minus
  at the last), ``wall_s`` (training and scoring), ``sft_first`` (the shared supervised updates
  before it), ``overrides``;
* per method, ``"summary": true``: ``seeds`` and, for ``new_gain``, ``forgetting`` and ``wall_s``,
  the mean, seed-std (``_std``) and 95% t-interval over seeds (``_ci95``);
* with both methods, ``"matched": true``: airline's forgetting at matched new-domain score.
  Per seed, the levels are ``LEVELS`` evenly spaced new-domain scores above the start up to the
  lower of the two runs' best; each run's airline score at a level is taken when its
  new-domain score first reaches it (linear between probes). ``difference`` = mean over levels
  of SFT's forgetting minus GRPO's (> 0: supervised training forgot more at the same new-domain
  score); ``null`` for a seed whose GRPO or SFT run never rose above the start.
  ``difference_mean``, ``_std``, ``_ci95`` over seeds.

The figure ``<output_dir>/rl_vs_sft.png`` draws airline's score (y) against the new domain's
(x) along each run, one line per method and seed (RL's Razor's picture: the method whose curve
stays higher at the same new-domain score forgets less); a shared supervised start is drawn in
grey.

    python benchmarks/rl_vs_sft.py                            # 3 seeds, 30 updates each
    python benchmarks/rl_vs_sft.py --quick                    # smoke test
    python benchmarks/rl_vs_sft.py --sft_first 10 --updates 20 --eval_every 10
    python benchmarks/rl_vs_sft.py --seeds 0 --methods grpo --updates 40 --eval_every 10 \\
        --set learning_rate=3e-4
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import itertools
import json
import logging
import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _cli import SEQUENCE_FIELDS, add_override_argument
from _results import ResultLines
from forgetting import SEQUENCE_SETTINGS
from learning_signal import adapter_state, load_adapter_state
from rl_gain import WARM_START_DOMAIN, one_domain_config, seed_interval, warm_start
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import tau2.continual_learning  # noqa: F401  (import hygiene first)
from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.grpo.algorithms.sequential import SequentialCL
from tau2.continual_learning.grpo.evaluation import Score
from tau2.continual_learning.grpo.seeds import Seeds, WarmStartDraw
from tau2.continual_learning.grpo.warm_start import supervised_steps
from tau2.continual_learning.rollout import Episode
from tau2.continual_learning.rollout.prompt import pad_token_id

logger = logging.getLogger("benchmarks.rl_vs_sft")

OLD = WARM_START_DOMAIN
NEW = "airline_v2"
"""The default new domain."""
NEW_DOMAINS = ("airline_v2", "retail", "telecom")
NEW_DOMAIN_SETTINGS: dict[str, dict[str, Any]] = {"airline_v2": SEQUENCE_SETTINGS["interference"]}
"""New domain -> the GRPOConfig fields it runs under (under ``--set``, over the defaults)."""
METHODS = ("sft", "grpo")
SEEDS = (0, 1, 2)
UPDATES = 30
EVAL_EVERY = 5
LEVELS = 4
"""New-domain score levels per seed at which forgetting is compared."""
QUICK: dict[str, Any] = {"eval_tasks_per_domain": 4, "warm_start_demos_per_domain": 4}
"""``--quick``'s overrides (plus seed 0, 2 updates scored after each)."""
SUMMARISED = ("new_gain", "forgetting", "wall_s")
RESULTS_FILE = "rl_vs_sft.jsonl"
FIGURE_FILE = "rl_vs_sft.png"

Point = dict[str, float]
"""A curve point: ``updates``, ``new_score``, ``airline_score``."""


def point(updates: int, new: float, airline: float) -> Point:
    return {"updates": updates, "new_score": new, "airline_score": airline}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--new_domain",
        choices=NEW_DOMAINS,
        default=NEW,
        help=f"learned after airline (default: {NEW})",
    )
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0 1 2")
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, help=f"default: {' '.join(METHODS)}"
    )
    parser.add_argument(
        "--updates", type=int, help=f"optimizer updates per run (default: {UPDATES})"
    )
    parser.add_argument(
        "--eval_every",
        type=int,
        help=f"score both test splits every N updates (default: {EVAL_EVERY})",
    )
    parser.add_argument(
        "--sft_first",
        type=int,
        default=0,
        metavar="N",
        help="both methods start after N shared supervised updates on the new domain "
        "(default: 0, from the airline warm start)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: seed 0, 2 updates scored after each, {QUICK} "
        "(explicit flags and --set win)",
    )
    add_override_argument(
        parser,
        reserved=SEQUENCE_FIELDS,
        hint=" (use --seeds, --updates or --output_dir)",
    )
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/rl_vs_sft"))
    return parser


# -- the two methods -----------------------------------------------------------------------------
def demonstration_stream(episodes: Sequence[Episode], seed: int) -> Iterator[Episode]:
    """``episodes`` over and over, each pass in a fresh seeded order."""
    rng = random.Random(seed)
    while True:
        order = list(episodes)
        rng.shuffle(order)
        yield from order


def scorer(trainer: GRPOTrainer) -> Callable[[str], Score]:
    """A domain's test-split score with the trainer's current weights."""
    return lambda domain: trainer.evaluator.domain(domain)


def sft_run(
    config: GRPOConfig, weights: dict[str, Any], updates: int, every: int, start: dict | None
) -> tuple[list[Point], dict[str, Score], dict[str, Any]]:
    """Supervised steps on the demonstrations of ``config``'s domain from ``weights``, scored
    every ``every`` updates: the curve, the scores at update 0 and what was trained (with the
    trained ``weights`` and the last scores, ``end``, for a run that goes on from them)."""
    import torch

    new = config.domains[0]
    trainer = GRPOTrainer(config)
    load_adapter_state(trainer.model, weights)
    score = scorer(trainer)
    start = start or {d: score(d) for d in (OLD, new)}
    demos = trainer.warm_start.demonstrations(new, trainer.tasks(new, "train")).episodes
    if not demos:
        raise RuntimeError(f"sft: no {new} gold demonstration scored 1.0 and fit the context")
    seeds = Seeds(config.seed)
    stream = demonstration_stream(demos, seeds.warm_start(0, WarmStartDraw.ORDER))
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(  # one warm-start optimizer across the chunks
        params, lr=config.warm_start_learning_rate, weight_decay=config.weight_decay
    )
    curve = [point(0, start[new].mean, start[OLD].mean)]
    done = skipped = 0
    while done < updates:
        chunk = min(every, updates - done)
        episodes = list(itertools.islice(stream, chunk * config.warm_start_batch_size))
        result = supervised_steps(
            trainer.model,
            episodes,
            pad_token_id=pad_token_id(trainer.tokenizer),
            epochs=1,
            learning_rate=config.warm_start_learning_rate,
            batch_size=config.warm_start_batch_size,
            seed=seeds.warm_start(0, WarmStartDraw.ORDER) + done,
            bf16=bool(config.bf16),
            max_grad_norm=config.max_grad_norm,
            weight_decay=config.weight_decay,
            optimizer=optimizer,
        )
        done += chunk
        skipped += result.skipped_steps
        end = {new: score(new), OLD: score(OLD)}
        curve.append(point(done, end[new].mean, end[OLD].mean))
    trained = adapter_state(trainer.model)
    del trainer
    gc.collect()
    extra = {"demos": len(demos), "skipped_steps": skipped, "weights": trained, "end": end}
    return curve, start, extra


class Probes(SequentialCL):
    """Sequential GRPO on the new domain (the hooks' ``domain``) that scores both test splits
    every ``every`` steps; at the last step only ``OLD`` (the run's own final evaluation scores
    the new domain), and ``OLD`` before the first step unless given (the run's baseline scores
    the new domain)."""

    def __init__(
        self, score: Callable[[str], Score], every: int, last_step: int, start: float | None
    ) -> None:
        super().__init__()
        self.score = score
        self.every = every
        self.last_step = last_step
        self.start_airline = start
        self.end_airline: float | None = None
        self.points: list[Point] = []

    def pre_task_hook(self, trainer: Any, domain: str) -> None:
        if self.start_airline is None:
            self.start_airline = self.score(OLD).mean

    def post_step_hook(self, trainer: Any, domain: str) -> None:
        step = trainer.global_step
        if step == self.last_step:
            self.end_airline = self.score(OLD).mean
        elif step % self.every == 0:
            self.points.append(point(step, self.score(domain).mean, self.score(OLD).mean))

    def state_dict(self) -> dict[str, Any]:
        """Checkpointed state without the scorer (it holds the trainer)."""
        return {
            k: copy.deepcopy(v) for k, v in vars(self).items() if k not in ("_trainer", "score")
        }


def grpo_run(
    config: GRPOConfig, weights: dict[str, Any], updates: int, every: int, start: dict | None
) -> tuple[list[Point], dict[str, Score], dict[str, Any]]:
    """GRPO steps on ``config``'s domain from ``weights``, no demonstrations, scored every ``every``
    steps: the curve, ``start`` as given (the last method of a seed) and the mean informative
    share."""
    trainer = GRPOTrainer(config)
    load_adapter_state(trainer.model, weights)
    if start is not None:
        trainer.record.set_baseline([start[config.domains[0]]])
    probes = Probes(scorer(trainer), every, updates, start[OLD].mean if start else None)
    trainer.cl_algorithm = probes
    metrics = trainer.train()
    stats = metrics["step_stats"]
    curve = [
        point(0, metrics["baseline"][0], probes.start_airline),
        *probes.points,
        point(len(stats), metrics["accuracy_matrix"][-1][0], probes.end_airline),
    ]
    shutil.rmtree(Path(config.output_dir) / "checkpoints", ignore_errors=True)
    del trainer, probes
    gc.collect()
    share = statistics.fmean(s["informative_share"] for s in stats) if stats else None
    return curve, start, {"informative_share": share}


# -- forgetting at matched new-domain score ------------------------------------------------------
def airline_at(curve: Sequence[Point], level: float) -> float | None:
    """Airline's score when the run's new-domain score first reaches ``level`` (linear between
    the two probes around it); ``None`` if it never does."""
    previous = None
    for p in curve:
        if p["new_score"] >= level:
            if previous is None:
                return p["airline_score"]
            span = p["new_score"] - previous["new_score"]
            t = (level - previous["new_score"]) / span
            return previous["airline_score"] + t * (p["airline_score"] - previous["airline_score"])
        previous = p
    return None


def matched_forgetting(sft: Sequence[Point], grpo: Sequence[Point], seed: int) -> dict[str, Any]:
    """One seed's forgetting of both methods at ``LEVELS`` new-domain scores both runs
    reach above
    their start, and its mean difference (SFT's minus GRPO's)."""
    low = max(sft[0]["new_score"], grpo[0]["new_score"])
    high = min(max(p["new_score"] for p in sft), max(p["new_score"] for p in grpo))
    row: dict[str, Any] = {"seed": seed, "new_range": None, "difference": None}
    if high <= low:
        return row
    levels = [low + (high - low) * k / LEVELS for k in range(1, LEVELS + 1)]
    forgot = {
        name: [curve[0]["airline_score"] - airline_at(curve, level) for level in levels]
        for name, curve in (("sft", sft), ("grpo", grpo))
    }
    return {
        "seed": seed,
        "new_range": [low, high],
        "levels": levels,
        "sft_forgetting": forgot["sft"],
        "grpo_forgetting": forgot["grpo"],
        "difference": statistics.fmean(
            s - g for s, g in zip(forgot["sft"], forgot["grpo"], strict=True)
        ),
    }


def matched_line(runs: dict[tuple[str, int], dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """The ``"matched": true`` line over the seeds with both methods' runs."""
    per_seed = [
        matched_forgetting(runs["sft", s]["curve"], runs["grpo", s]["curve"], s) for s in seeds
    ]
    differences = [row["difference"] for row in per_seed if row["difference"] is not None]
    mean, std, ci95 = seed_interval(differences) if differences else (None, None, None)
    return {
        "matched": True,
        "seeds": seeds,
        "per_seed": per_seed,
        "difference_mean": mean,
        "difference_std": std,
        "difference_ci95": ci95,
    }


def summary(method: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The method's line: mean, seed-std and 95% interval over its seeds."""
    row: dict[str, Any] = {"summary": True, "method": method, "seeds": [x["seed"] for x in lines]}
    for name in SUMMARISED:
        row[f"{name}_mean"], row[f"{name}_std"], row[f"{name}_ci95"] = seed_interval(
            [x[name] for x in lines]
        )
    return row


def plot(lines: Sequence[dict[str, Any]], new: str, path: Path) -> None:
    """Airline's score against the new domain's along each run, one line per method and seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"sft": "tab:red", "grpo": "tab:blue", "sft_first": "tab:gray"}
    markers = "osD^v<>"
    seeds = sorted({x["seed"] for x in lines})
    fig, ax = plt.subplots(figsize=(6, 5))
    for line in lines:
        curve = line["curve"]
        name = "sft_first" if line.get("sft_first") is True else line["method"]
        ax.plot(
            [p["new_score"] for p in curve],
            [p["airline_score"] for p in curve],
            color=colours[name],
            linestyle="--" if name == "sft_first" else "-",
            marker=markers[seeds.index(line["seed"]) % len(markers)],
            markersize=4,
            alpha=0.8,
            label=f"{name} seed {line['seed']}",
        )
        ax.plot(curve[0]["new_score"], curve[0]["airline_score"], "k*", markersize=9)
    ax.set_xlabel(f"{new} pass^1 (learned)")
    ax.set_ylabel(f"{OLD} pass^1 (kept)")
    ax.set_title("Old domain kept against new domain learned\n(star: where a run starts)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def shared_sft_start(
    config: GRPOConfig, weights: dict[str, Any], updates: int
) -> tuple[dict[str, Any], dict[str, Score], dict[str, Any]]:
    """``updates`` supervised updates on the new domain from ``weights`` (``--sft_first``): the
    weights both methods go on from, their scores there (update 0 of both runs) and the
    ``"sft_first": true`` line."""
    shutil.rmtree(config.output_dir, ignore_errors=True)
    began = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        curve, _, extra = sft_run(config, weights, updates, updates, None)
    line = {
        "sft_first": True,
        "seed": config.seed,
        "new_domain": config.domains[0],
        "updates": updates,
        "curve": curve,
        "wall_s": round(time.perf_counter() - began, 1),
    }
    return extra["weights"], extra["end"], line


# -- the benchmark -------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; returns every line it printed."""
    parser = build_parser()
    args = parser.parse_args(argv)
    seeds = list(dict.fromkeys(args.seeds or ([0] if args.quick else SEEDS)))
    methods = [m for m in METHODS if m in (args.methods or METHODS)]  # sft scores update 0
    updates = args.updates if args.updates is not None else (2 if args.quick else UPDATES)
    every = args.eval_every if args.eval_every is not None else (1 if args.quick else EVAL_EVERY)
    if updates < 1:
        parser.error(f"--updates must be >= 1, got {updates}")
    if every < 1:
        parser.error(f"--eval_every must be >= 1, got {every}")
    if args.sft_first < 0:
        parser.error(f"--sft_first must be >= 0, got {args.sft_first}")
    common = json.loads(
        json.dumps(
            {
                **NEW_DOMAIN_SETTINGS.get(args.new_domain, {}),
                **(QUICK if args.quick else {}),
                **dict(args.overrides),
            }
        )
    )

    def config(seed: int, name: str, domain: str, fields: dict[str, Any]) -> GRPOConfig:
        folder = args.output_dir / f"seed-{seed}" / name
        return one_domain_config({**common, **fields}, domain, seed, folder)

    method_fields = {
        "sft": {"max_steps_per_domain": updates},
        "grpo": {"max_steps_per_domain": updates, "warm_start_demos_per_domain": 0},
    }
    try:  # every config is checked before the first run starts
        for seed in seeds:
            config(seed, "warm_start", OLD, {"max_steps_per_domain": 0})
            config(seed, "sft_first", args.new_domain, method_fields["sft"])
            for method in methods:
                config(seed, method, args.new_domain, method_fields[method])
    except (TypeError, ValueError) as err:
        parser.error(str(err))

    results_lines = ResultLines(args.output_dir / RESULTS_FILE, logger)
    emit = results_lines.emit

    run_method = {"sft": sft_run, "grpo": grpo_run}
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    shared_starts: list[dict[str, Any]] = []
    plan = [(seed, name) for seed in seeds for name in ("warm_start", *methods)]
    with logging_redirect_tqdm(), tqdm(plan, desc="rl-vs-sft runs", unit="run") as bar:
        for seed, name in bar:
            bar.set_postfix_str(f"seed-{seed}/{name}")
            if name == "warm_start":
                weights, line = warm_start(config(seed, name, OLD, {"max_steps_per_domain": 0}))
                emit(line)
                start = None  # the scores at update 0, shared by the seed's runs
                if args.sft_first:
                    weights, start, line = shared_sft_start(
                        config(seed, "sft_first", args.new_domain, method_fields["sft"]),
                        weights,
                        args.sft_first,
                    )
                    shared_starts.append(line)
                    emit(line)
                continue
            cfg = config(seed, name, args.new_domain, method_fields[name])
            shutil.rmtree(cfg.output_dir, ignore_errors=True)
            began = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):  # TRL prints its logs: stdout is ours
                curve, start, extra = run_method[name](cfg, weights, updates, every, start)
            extra.pop("weights", None)
            extra.pop("end", None)
            line = {
                "method": name,
                "seed": seed,
                "new_domain": args.new_domain,
                "curve": curve,
                "new_gain": curve[-1]["new_score"] - curve[0]["new_score"],
                "forgetting": curve[0]["airline_score"] - curve[-1]["airline_score"],
                "wall_s": round(time.perf_counter() - began, 1),
                **extra,
                "sft_first": args.sft_first,
                "overrides": {**common, **method_fields[name]},
            }
            runs[name, seed] = line
            emit(line)
            logger.info(
                "seed %d %s: %s %+.3f, airline forgetting %+.3f, %.0f s",
                seed, name, args.new_domain, line["new_gain"], line["forgetting"], line["wall_s"],
            )  # fmt: skip
    for method in methods:
        emit(summary(method, [runs[method, s] for s in seeds]))
    if set(METHODS) <= set(methods):
        emit(matched_line(runs, seeds))
    plot([*shared_starts, *runs.values()], args.new_domain, args.output_dir / FIGURE_FILE)
    logger.info("figure written to %s", args.output_dir / FIGURE_FILE)
    return results_lines.printed


if __name__ == "__main__":
    main()
