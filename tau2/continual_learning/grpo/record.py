"""The record of a continual run: what it measured and where it is, written once.

:class:`RunRecord` holds everything ``metrics.json`` reports (scores, intervals, phase scores,
step statistics, log rows, warm-start statistics, counters, wall time) and the run's position
(domain index, global step). Its fields are its checkpoint state: :meth:`RunRecord.state_dict`
and :meth:`RunRecord.load_state_dict` round-trip them, so a field added here is saved, restored
and reported without being spelled out anywhere else.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tau2.continual_learning.grpo.evaluation import Score
from tau2.continual_learning.metrics import bootstrap_cl_intervals, compute_cl_metrics
from tau2.continual_learning.report import (
    peak_rss_mb,
    write_json_atomic,
    write_rows_csv,
    write_run_report,
)

__all__ = ["TRL_STEP_METRICS", "OnRecord", "RunRecord"]

TRL_STEP_METRICS = ("entropy", "clip_ratio/")
"""TRL's logged metrics (names, or prefixes ending in ``/``) copied into a step's statistics:
the policy's mean token entropy and the clip fractions (``clip_ratio/low_mean``,
``clip_ratio/high_mean``, ``clip_ratio/region_mean`` ...). TRL computes them in the loss, so
a step whose micro-batches all lacked signal (skipped passes) has none."""


@dataclass
class RunRecord:
    """Scores, statistics and position of one continual run over ``domains``."""

    domains: list[str]
    baseline: list[float] = field(default_factory=list)
    """Each domain's score before any training (the FWT baseline)."""
    baseline_rewards: list[list[float]] = field(default_factory=list)
    """Per domain, each test task's reward before any training."""
    accuracy_matrix: list[list[float]] = field(default_factory=list)
    """Row i: every domain's score after training through domain i."""
    score_intervals: list[list[dict[str, float | int]]] = field(default_factory=list)
    """Per accuracy-matrix row, each domain's pass^1 with its 95% interval."""
    eval_rewards: list[list[list[float]]] = field(default_factory=list)
    """Per row and domain, each test task's reward (bootstrap intervals of ACC etc.)."""
    phase_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per trained domain, its own score ``before`` its training (the previous row, or the
    baseline), ``after_warm_start`` (when a warm start ran and was scored) and ``after_grpo``
    (its diagonal entry): which phase learned what."""
    step_stats: list[dict[str, Any]] = field(default_factory=list)
    """Per optimizer step: domain, global step, mean tau2 reward, informative-group share
    (:func:`~tau2.continual_learning.grpo.step.step_statistics`), and TRL's policy entropy and
    clip fractions for the step (:data:`TRL_STEP_METRICS`, where TRL logged them)."""
    log_rows: list[dict[str, Any]] = field(default_factory=list)
    """Warm-start epochs and TRL's log history, tagged with domain and global step."""
    warm_start: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per domain, what its warm start did (demos, replayed demos, tokens, loss, seconds)."""
    domain_index: int = 0
    """Domains finished (the index of the next one)."""
    global_step: int = 0
    """Optimizer steps so far, over all domains."""
    domain_start_step: int = 0
    """``global_step`` when the current domain started."""
    nonfinite_losses: int = 0
    """Updates skipped because their loss was NaN/inf."""
    passes_without_signal: int = 0
    """Training micro-batches whose advantages were all zero (no forward/backward run)."""
    wall_time_s: float = 0.0

    # -- scores --------------------------------------------------------------------------------
    def set_baseline(self, scores: list[Score]) -> None:
        self.baseline = [s.mean for s in scores]
        self.baseline_rewards = [list(s.rewards) for s in scores]

    def begin_domain(self, domain: str) -> None:
        """Note the domain's score before its training (its phase attribution's start)."""
        index = self.domains.index(domain)
        before = self.accuracy_matrix[-1] if self.accuracy_matrix else self.baseline
        self.phase_scores[domain] = {"before": before[index]} if before else {}
        self.domain_start_step = self.global_step

    def add_row(self, domain: str, scores: list[Score]) -> None:
        """One accuracy-matrix row, scored after training ``domain``."""
        self.accuracy_matrix.append([s.mean for s in scores])
        self.score_intervals.append([s.as_dict() for s in scores])
        self.eval_rewards.append([list(s.rewards) for s in scores])
        diagonal = self.accuracy_matrix[-1][self.domains.index(domain)]
        self.phase_scores.setdefault(domain, {})["after_grpo"] = diagonal

    def add_log_rows(self, domain: str, rows: list[dict[str, Any]], **tags: Any) -> None:
        """Log rows of ``domain`` (warm-start epochs, TRL's log history), tagged with the domain,
        the global step (a row's ``step`` counts from the domain's start) and ``tags``."""
        self.log_rows += [
            {"domain": domain, "global_step": self.domain_start_step + row.get("step", 0)}
            | tags
            | row
            for row in rows
        ]

    def add_trl_log(self, domain: str, row: dict[str, Any]) -> None:
        """One row of TRL's log history (``row["step"]`` counts from the domain's start): TRL's
        entropy and clip fractions (:data:`TRL_STEP_METRICS`) join the statistics of the step
        it closes, that step's statistics join the row, and the row joins the log rows
        (``training_log.csv``). TRL's end-of-training summary row is kept as it is."""
        row = dict(row)
        step = self.domain_start_step + row.get("step", 0) - 1
        matches = [s for s in self.step_stats if s["domain"] == domain and s["global_step"] == step]
        if "reward" in row and matches:  # TRL's step rows carry the step's reward
            stats = matches[-1]
            stats.update({k: v for k, v in row.items() if _is_step_metric(k)})
            row |= {k: v for k, v in stats.items() if k not in ("domain", "global_step", *row)}
        self.add_log_rows(domain, [row])

    def latest_scores(self) -> dict[str, float]:
        """The last accuracy-matrix row as ``{domain: score}``."""
        if not self.accuracy_matrix:
            return {}
        return dict(zip(self.domains, self.accuracy_matrix[-1], strict=False))

    # -- results -------------------------------------------------------------------------------
    def metrics(self, seed: int, about: dict[str, Any]) -> dict[str, Any]:
        """Everything ``metrics.json`` holds: matrix, ACC/BWT/FWT/forgetting (with bootstrap
        intervals seeded by ``seed``), phase scores, statistics, and ``about`` (what the run
        was: algorithm, backend, model ...)."""
        metrics: dict[str, Any] = {
            "domains": list(self.domains),
            "baseline": list(self.baseline),
            "accuracy_matrix": [list(r) for r in self.accuracy_matrix],
            "score_intervals": [list(r) for r in self.score_intervals],
        }
        if self.accuracy_matrix:
            cl = compute_cl_metrics(
                self.accuracy_matrix, self.baseline[: len(self.domains)] or None
            )
            metrics.update({k: cl[k] for k in ("ACC", "BWT", "FWT", "forgetting")})
            metrics["forgetting_per_domain"] = cl["forgetting_per_task"]
            metrics["intervals"] = bootstrap_cl_intervals(
                self.eval_rewards, self.baseline_rewards or None, seed=seed
            )
        metrics.update(
            {
                "phase_scores": copy.deepcopy(self.phase_scores),
                "wall_time_s": self.wall_time_s,
                "peak_rss_mb": peak_rss_mb(),
                "step_stats": list(self.step_stats),
                "global_steps": self.global_step,
                "nonfinite_losses": self.nonfinite_losses,
                "passes_without_signal": self.passes_without_signal,
                "warm_start": dict(self.warm_start),
                **about,
            }
        )
        return metrics

    def write(self, output_dir: str | Path, metrics: dict[str, Any]) -> None:
        """``metrics.json``, ``training_log.csv`` and the run report (report.md, figures)."""
        out = Path(output_dir)
        write_json_atomic(out / "metrics.json", metrics)
        if self.log_rows:
            write_rows_csv(out / "training_log.csv", self.log_rows)
        if self.accuracy_matrix:
            write_run_report(metrics, out)

    def write_rank_summary(self, output_dir: str | Path, process: Any, model: Any) -> None:
        """Under torchrun, what this rank (``process``: accelerate's ``PartialState``) ended
        with: matrix, step, a checksum of ``model``'s weights (``rank_summaries/rank-N.json``),
        so that the ranks can be checked for agreement."""
        if process.num_processes < 2:
            return
        rank = process.process_index
        checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
        summary = {
            "rank": rank,
            "global_step": self.global_step,
            "baseline": self.baseline,
            "accuracy_matrix": self.accuracy_matrix,
            "weights_checksum": checksum,
        }
        write_json_atomic(Path(output_dir) / "rank_summaries" / f"rank-{rank}.json", summary)

    # -- checkpoint state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Every field, copied (a checkpoint's part of the record)."""
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the fields ``state`` has, in place (so holders of this record see them);
        fields a checkpoint of an older version lacks keep their defaults."""
        fresh = type(self)(domains=list(self.domains))
        for f in dataclasses.fields(self):
            value = state[f.name] if f.name in state else getattr(fresh, f.name)
            setattr(self, f.name, copy.deepcopy(value))


def _is_step_metric(name: str) -> bool:
    return any(name.startswith(m) if m.endswith("/") else name == m for m in TRL_STEP_METRICS)


class OnRecord:
    """A trainer attribute kept on its record: ``trainer.x`` reads and writes
    ``trainer.record.x``, so the record stays the one place the run's state lives."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        return self if obj is None else getattr(obj.record, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj.record, self.name, value)
