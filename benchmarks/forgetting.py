"""Forgetting in continual GRPO, and what replay does about it.

Two domain sequences, each trained by several algorithms with 3 seeds (a seed sets both
``seed`` and ``skills_seed``, so it also draws the generated skill tasks):

* ``interference``: ``airline -> airline_v2`` (``--interference_domains``): a domain, then its
  API-migration variant, whose tools keep their names but take renamed and re-shaped
  arguments, so what the second domain teaches contradicts the first. Its prompts list tool
  names and descriptions without arguments (``tool_arguments_in_prompt=False``): with the
  arguments in the prompt, the model reads each version's from it and nothing is forgotten
  (docs/results.md, "Forgetting benchmark"). Algorithms: ``sequential`` (the forgetting baseline), ``replay``,
  ``adaptive_replay`` and ``warm_start_only`` (sequential, the supervised warm start on gold
  demonstrations and no GRPO steps: ``max_steps_per_domain=0``; the contrast that supervised
  fine-tuning forgets more than RL).
* ``plain``: ``airline -> retail -> telecom``, with ``sequential`` and ``replay``.

Replay's two channels, alone (``--algorithms replay_demos_only replay_groups_only``, either
sequence; not in the default plan): ``replay_demos_only`` mixes earlier domains' demonstrations
into each warm start and replays no task groups in GRPO; ``replay_groups_only`` replays task
groups in GRPO and no demonstrations in the warm start. Each is ``replay`` with one channel
turned off (:class:`ReplayDemosOnly`, :class:`ReplayGroupsOnly`), so ``replay`` against the two
says which channel carries its protection.

Every run is one ``GRPOTrainer(GRPOConfig(...)).train()`` in its own folder
``<output_dir>/<sequence>/<algorithm>/seed-<seed>`` (its ``metrics.json`` and ``report.md``;
the checkpoints are deleted once no run needs them unless ``--keep_checkpoints``). Settings
are the library defaults (the default job's) except what the benchmark varies (domains,
algorithm, seed) and what ``--quick``, ``--model_name_or_path`` and ``--set`` override; an
algorithm's own settings (``warm_start_only``'s ``max_steps_per_domain=0``) win over ``--set``.
``warm_start_only`` needs ``warm_start_demos_per_domain > 0``.

Shared first domain: ``sequential``, ``replay`` and ``adaptive_replay`` train a sequence's
first domain identically (nothing earlier to replay or probe), so per seed and sequence the
first of them to run (``sequential``) keeps its checkpoint after that domain and the others
continue from it (``GRPOTrainer.load_checkpoint(..., branch=True)``): their results are those of
full runs (tested), and their ``wall_s`` counts only their own part. ``--no_branch`` trains every
run from scratch. ``warm_start_only`` trains its first domain differently (no GRPO steps) and
always runs whole.

Budget: 18 runs (12 of two domains, 6 of three), meant to fit in a few hours on a 2-core CPU
(the measured times per machine are in docs/results.md, "Forgetting benchmark"). The untrained
scores are computed once per seed and sequence (also across ``--resume``). All runs share one process: a fresh trainer and
model per run, freed before the next. Runs go seed by seed, so an interrupted benchmark has
every algorithm for its first seeds.

Output, printed (and flushed) as each run finishes and appended to
``<output_dir>/forgetting.jsonl``:

* one line per run: ``sequence``, ``algorithm``, ``seed``, ``domains``, ``ACC``, ``BWT``,
  ``FWT``, ``forgetting``, ``accuracy_matrix`` (R[i][j]: pass^1 on domain j after training
  through domain i), ``baseline`` (the untrained scores) and ``baseline_rewards`` (their
  per-task rewards, for bootstrap intervals), ``branched_from`` (the algorithm whose first
  domain the run continued, else ``null``), ``wall_s`` (model loading included; a branched
  run's own part only),
  ``peak_rss_mb`` (the run's own peak where Linux lets the high-water mark be reset, else the
  process's so far) and ``overrides`` (the GRPOConfig fields set beyond the library defaults);
* then one line per (sequence, algorithm): ``"summary": true``, ``runs``, ``seeds`` and the
  mean and *population* standard deviation over seeds (``<name>_mean``, ``<name>_std``) of
  ACC, BWT, FWT, forgetting and wall_s (``null`` where a metric is undefined).

Reading it: forgetting > 0 (BWT < 0) means an earlier domain's score fell after later
training. On ``interference`` replay should forget less than ``sequential``, and
``warm_start_only`` more; ``plain`` shows the same on unrelated domains. Differences within a
standard deviation are noise: test splits are a few dozen tasks.

``--resume`` skips runs whose line (same sequence, domains, algorithm, seed and overrides) is
already in ``forgetting.jsonl`` and summarises them with the new ones (the summary lines are
appended only when a run was added); the untrained scores of a recorded run serve the new runs
of its seed, and its kept first-domain checkpoint (when it still matches its line) the
branches of its seed. It assumes the library defaults did not change in between.

    python benchmarks/forgetting.py                       # everything, 3 seeds
    python benchmarks/forgetting.py --quick               # smoke test (minutes)
    python benchmarks/forgetting.py --resume --plot docs/figures/forgetting.png  # the figure
    python benchmarks/forgetting.py --sequences interference --algorithms sequential replay \\
        --seeds 0 --set max_steps_per_domain=6 --resume
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import logging
import os
import random
import re
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
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
from tau2.continual_learning.grpo.algorithms import ReplayCL
from tau2.continual_learning.grpo.checkpointing import END_PREFIX, STATE_FILE
from tau2.continual_learning.report import peak_rss_mb as process_peak_rss_mb
from tau2.continual_learning.report import plot_forgetting_benchmark

logger = logging.getLogger("benchmarks.forgetting")


class ReplayDemosOnly(ReplayCL):
    """Replay's warm-start channel alone: earlier domains' demonstrations join each warm start
    (as ``replay``'s do); no task group is replayed in GRPO."""

    name = "replay_demos_only"

    def num_replay_slots(self, batch_size: int, rng: random.Random) -> int:
        return 0


class ReplayGroupsOnly(ReplayCL):
    """Replay's GRPO channel alone: earlier domains' task groups in the steps (as ``replay``'s
    are); no demonstration is replayed in the warm start."""

    name = "replay_groups_only"

    def warm_start_replay(self, domain: str, num_demos: int, rng: random.Random) -> dict[str, int]:
        return {}


ALGORITHMS: dict[str, dict[str, Any]] = {
    "sequential": {"cl_algorithm": "sequential"},
    "replay": {"cl_algorithm": "replay"},
    "adaptive_replay": {"cl_algorithm": "adaptive_replay"},
    "warm_start_only": {"cl_algorithm": "sequential", "max_steps_per_domain": 0},
    "replay_demos_only": {"cl_algorithm": "replay"},
    "replay_groups_only": {"cl_algorithm": "replay"},
}
"""Benchmark algorithm -> the GRPOConfig fields that make it."""
CHANNELS: dict[str, type[ReplayCL]] = {
    "replay_demos_only": ReplayDemosOnly,
    "replay_groups_only": ReplayGroupsOnly,
}
"""Benchmark algorithm -> the replay variant that replaces the config's ``replay`` (built from
the same config fields: ``replay_ratio`` and the rest)."""
SEQUENCE_ALGORITHMS: dict[str, tuple[str, ...]] = {
    "interference": ("sequential", "replay", "adaptive_replay", "warm_start_only", *CHANNELS),
    "plain": ("sequential", "replay", *CHANNELS),
}
"""Sequence -> the algorithms it may run."""
DEFAULT_ALGORITHMS = ("sequential", "replay", "adaptive_replay", "warm_start_only")
"""What runs without ``--algorithms`` (of each sequence's list)."""
SEQUENCE_SETTINGS: dict[str, dict[str, Any]] = {
    "interference": {"tool_arguments_in_prompt": False},
    "plain": {},
}
"""Sequence -> the GRPOConfig fields that make it (under ``--set``, over the defaults)."""
SHARED_FIRST_DOMAIN = ("sequential", "replay", "adaptive_replay", *CHANNELS)
"""Algorithms whose first domain trains identically: one run of a seed trains it, the others
branch from its checkpoint after it."""
FIRST_DOMAIN_END = f"{END_PREFIX}01"
INTERFERENCE_DOMAINS = ("airline", "airline_v2")
PLAIN_DOMAINS = ("airline", "retail", "telecom")
QUICK: dict[str, Any] = {
    "max_steps_per_domain": 1,
    "eval_tasks_per_domain": 4,
    "warm_start_demos_per_domain": 4,
}
"""``--quick``'s overrides (plus one seed, ``interference``, ``sequential`` and ``replay``)."""
PER_RUN_FIELDS = ("domains", "cl_algorithm", "seed", "skills_seed", "output_dir")
"""GRPOConfig fields the benchmark sets per run, so ``--set`` may not."""
METRICS = ("ACC", "BWT", "FWT", "forgetting", "wall_s")
RESULTS_FILE = "forgetting.jsonl"


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the benchmark."""

    sequence: str
    algorithm: str
    seed: int
    domains: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str, int, tuple[str, ...]]:
        return self.sequence, self.algorithm, self.seed, self.domains

    def folder(self, output_dir: Path) -> Path:
        return output_dir / self.sequence / self.algorithm / f"seed-{self.seed}"

    def config(
        self, overrides: dict[str, Any], output_dir: Path, trunk: bool = False
    ) -> GRPOConfig:
        """The run's config: library defaults < the sequence's settings < ``overrides`` < what
        the run itself sets (a ``trunk`` keeps every domain-end checkpoint, so its first
        domain's outlives the run for the branches)."""
        return GRPOConfig(
            **{
                **SEQUENCE_SETTINGS[self.sequence],
                **overrides,
                **ALGORITHMS[self.algorithm],
                **({"save_total_limit": len(self.domains)} if trunk else {}),
                "domains": list(self.domains),
                "seed": self.seed,
                "skills_seed": self.seed,
                "output_dir": str(self.folder(output_dir)),
            }
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sequences", nargs="+", choices=list(SEQUENCE_ALGORITHMS), help="default: both"
    )
    parser.add_argument(
        "--algorithms",
        nargs="+",
        choices=list(ALGORITHMS),
        help=f"default: {' '.join(DEFAULT_ALGORITHMS)} (each sequence runs those of its list "
        "above)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0 1 2")
    parser.add_argument(
        "--interference_domains",
        nargs="+",
        default=list(INTERFERENCE_DOMAINS),
        help="the interference sequence (at least two domains)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: seed 0, interference, sequential and replay, {QUICK} "
        "(explicit flags and --set win)",
    )
    parser.add_argument("--model_name_or_path", help="default: the library's default model")
    add_override_argument(
        parser,
        reserved=(*PER_RUN_FIELDS, "model_name_or_path"),
        hint=" (use --sequences, --interference_domains, --algorithms, --seeds, --output_dir or "
        "--model_name_or_path)",
    )
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/forgetting"))
    parser.add_argument(
        "--resume", action="store_true", help=f"skip runs already recorded in {RESULTS_FILE}"
    )
    parser.add_argument(
        "--keep_checkpoints", action="store_true", help="keep each run's checkpoints folder"
    )
    parser.add_argument(
        "--no_branch",
        action="store_true",
        help=f"train every run from scratch instead of continuing {SHARED_FIRST_DOMAIN}' shared "
        "first domain from one run's checkpoint",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="at the end, draw forgetting and ACC per sequence and algorithm (mean, std, seeds) "
        "of the planned runs to this file (with --resume and every run recorded: no training)",
    )
    return parser


def planned_runs(args: argparse.Namespace) -> list[Run]:
    """Seed-major order, so an interrupted benchmark has every algorithm for its first seeds."""
    sequences = args.sequences or (["interference"] if args.quick else list(SEQUENCE_ALGORITHMS))
    algorithms = args.algorithms or (["sequential", "replay"] if args.quick else DEFAULT_ALGORITHMS)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    domains = {"interference": tuple(args.interference_domains), "plain": PLAIN_DOMAINS}
    return [
        Run(sequence, algorithm, seed, domains[sequence])
        for seed in dict.fromkeys(seeds)
        for sequence in dict.fromkeys(sequences)
        for algorithm in dict.fromkeys(algorithms)
        if algorithm in SEQUENCE_ALGORITHMS[sequence]
    ]


def branch_trunks(runs: list[Run]) -> dict[tuple, Run]:
    """Run key -> the run whose first domain it continues: the first planned run of its
    sequence, seed and domains among :data:`SHARED_FIRST_DOMAIN` (the trunk)."""
    first: dict[tuple, Run] = {}
    trunks = {}
    for run in runs:
        if run.algorithm in SHARED_FIRST_DOMAIN:
            trunk = first.setdefault((run.sequence, run.seed, run.domains), run)
            if trunk is not run:
                trunks[run.key] = trunk
    return trunks


def first_domain_checkpoint(trunk: Run, line: dict[str, Any], output_dir: Path) -> Path | None:
    """The trunk's kept checkpoint after its first domain, if it is the recorded ``line``'s
    (same untrained scores and first row: not left by a run with other settings)."""
    import torch

    folder = trunk.folder(output_dir) / "checkpoints" / FIRST_DOMAIN_END
    if not (folder / STATE_FILE).is_file():
        return None
    state = torch.load(folder / STATE_FILE, weights_only=False)
    matrix = state["accuracy_matrix"]
    if state["baseline"] != line["baseline"] or matrix[:1] != line["accuracy_matrix"][:1]:
        return None
    return folder


def reset_peak_rss() -> None:
    """Reset this process's resident-memory high-water mark (Linux >= 4.0; else a no-op)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """Peak RSS since :func:`reset_peak_rss` (``VmHWM``), else the process's peak so far."""
    status = Path("/proc/self/status")
    match = re.search(r"VmHWM:\s+(\d+) kB", status.read_text()) if status.is_file() else None
    return round(int(match.group(1)) / 1024 if match else process_peak_rss_mb(), 1)


Baselines = dict[tuple[int, tuple[str, ...]], tuple[list[float], list[list[float]]]]
"""Untrained scores and per-task rewards by (seed, domains): the same for every algorithm."""


def run_once(
    run: Run, config: GRPOConfig, baselines: Baselines, branch: tuple[str, Path] | None
) -> dict[str, Any]:
    """Train one run with a fresh trainer and model; its result line (without overrides).

    The untrained model's scores depend on the seed (the skill tasks and the evaluation draw)
    and the domains, not on the algorithm, so the first run of a seed scores them and the
    others reuse them (``baselines``, which also holds those of runs recorded earlier): a
    quarter of a two-domain run's time. ``branch``: (algorithm, checkpoint) to continue the
    first domain from instead of training it."""
    folder = Path(config.output_dir)
    shutil.rmtree(folder, ignore_errors=True)  # what an interrupted attempt left
    reset_peak_rss()
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # TRL prints its logs: stdout is ours
        trainer = GRPOTrainer(config)
        if run.algorithm in CHANNELS:
            trainer.cl_algorithm = CHANNELS[run.algorithm].from_config(config)
        key = (run.seed, run.domains)
        if branch is not None:
            trainer.load_checkpoint(branch[1], branch=True)
        elif key in baselines:
            trainer.baseline, trainer.baseline_rewards = baselines[key]
        metrics = trainer.train()
        baselines[key] = (trainer.baseline, trainer.baseline_rewards)
    wall_s = time.perf_counter() - start
    del trainer  # the model, optimizer and buffer go before the next run loads its own
    gc.collect()
    return {
        "sequence": run.sequence,
        "algorithm": run.algorithm,
        "seed": run.seed,
        "domains": list(run.domains),
        **{
            k: metrics[k]
            for k in ("ACC", "BWT", "FWT", "forgetting", "accuracy_matrix", "baseline")
        },
        "baseline_rewards": baselines[key][1],
        "branched_from": branch[0] if branch else None,
        "wall_s": round(wall_s, 1),
        "peak_rss_mb": peak_rss_mb(),
    }


def recorded_runs(path: Path, overrides: dict[str, Any]) -> dict[tuple, dict[str, Any]]:
    """Run lines of ``path`` made with ``overrides``, by run key (a later line wins)."""
    found: dict[tuple, dict[str, Any]] = {}
    if not path.is_file():
        return found
    for number, text in enumerate(path.read_text().splitlines(), 1):
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            logger.warning("%s:%d is not JSON (an interrupted write?); ignored", path, number)
            continue
        if not line.get("summary") and line.get("overrides") == overrides:
            run = Run(line["sequence"], line["algorithm"], line["seed"], tuple(line["domains"]))
            found[run.key] = line
    return found


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and population standard deviation of the defined values."""
    defined = [v for v in values if v is not None]
    if not defined:
        return None, None
    return statistics.fmean(defined), statistics.pstdev(defined)


def summary(sequence: str, algorithm: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The (sequence, algorithm) line: mean and population std over its runs."""
    row: dict[str, Any] = {
        "summary": True,
        "sequence": sequence,
        "algorithm": algorithm,
        "runs": len(lines),
        "seeds": [line["seed"] for line in lines],
    }
    for name in METRICS:
        row[f"{name}_mean"], row[f"{name}_std"] = mean_std([line[name] for line in lines])
    return row


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; returns every line it printed."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.interference_domains) < 2:
        parser.error("--interference_domains: at least two domains (forgetting needs a sequence)")
    runs = planned_runs(args)
    if not runs:
        parser.error(
            "no run: --algorithms selects none of the --sequences' algorithms "
            f"({SEQUENCE_ALGORITHMS})"
        )
    overrides = {**(QUICK if args.quick else {}), **dict(args.overrides)}
    if args.model_name_or_path:
        overrides["model_name_or_path"] = args.model_name_or_path
    overrides = json.loads(json.dumps(overrides))  # as a recorded line holds it
    trunks = {} if args.no_branch else branch_trunks(runs)
    trunk_keys = {trunk.key for trunk in trunks.values()}
    configs = {}
    for run in runs:  # every config is checked before the first run starts
        try:
            configs[run.key] = run.config(overrides, args.output_dir, run.key in trunk_keys)
        except (TypeError, ValueError) as err:
            parser.error(f"{run.sequence}/{run.algorithm}: {err}")

    results_lines = ResultLines(args.output_dir / RESULTS_FILE, logger)
    emit = results_lines.emit
    results = recorded_runs(results_lines.path, overrides) if args.resume else {}
    baselines: Baselines = {
        (line["seed"], tuple(line["domains"])): (line["baseline"], line["baseline_rewards"])
        for line in results.values()
        if "baseline_rewards" in line  # lines of older versions lack the per-task rewards
    }
    recorded_before = len(results)

    def prune_checkpoints(done: Run) -> None:
        """Delete what no later run needs: a run's checkpoints, a trunk's once its branches ran."""
        if args.keep_checkpoints:
            return
        for run in (done, trunks.get(done.key)):
            if run is None or (
                run.key in trunk_keys
                and not all(branch in results for branch, trunk in trunks.items() if trunk == run)
            ):
                continue
            shutil.rmtree(run.folder(args.output_dir) / "checkpoints", ignore_errors=True)

    def branch_of(run: Run) -> tuple[str, Path] | None:
        trunk = trunks.get(run.key)
        if trunk is None or trunk.key not in results:
            return None
        checkpoint = first_domain_checkpoint(trunk, results[trunk.key], args.output_dir)
        if checkpoint is None:
            logger.info(
                "%s/%s/seed-%d: no first-domain checkpoint of %s kept: trained whole",
                run.sequence,
                run.algorithm,
                run.seed,
                trunk.algorithm,
            )
            return None
        return trunk.algorithm, checkpoint

    with logging_redirect_tqdm(), tqdm(runs, desc="forgetting runs", unit="run") as bar:
        for run in bar:
            label = f"{run.sequence}/{run.algorithm}/seed-{run.seed}"
            bar.set_postfix_str(label)
            if run.key in results:
                logger.info("%s: already recorded, skipped (--resume)", label)
                continue
            line = {
                **run_once(run, configs[run.key], baselines, branch_of(run)),
                "overrides": overrides,
            }
            logger.info(
                "%s: ACC %.3f, forgetting %s, %.0f s",
                label,
                line["ACC"],
                line["forgetting"],
                line["wall_s"],
            )
            results[run.key] = line
            emit(line)
            prune_checkpoints(run)
    for sequence, algorithm in dict.fromkeys((r.sequence, r.algorithm) for r in runs):
        lines = [results[r.key] for r in runs if (r.sequence, r.algorithm) == (sequence, algorithm)]
        # summaries are recorded when they summarise something new, printed always
        emit(summary(sequence, algorithm, lines), record=len(results) > recorded_before)
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_forgetting_benchmark([results[r.key] for r in runs], args.plot)
        logger.info("figure written to %s", args.plot)
    return results_lines.printed


if __name__ == "__main__":
    main()
