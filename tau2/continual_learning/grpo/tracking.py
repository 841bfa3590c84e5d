"""One experiment-tracker run for a whole continual run: TRL's step logs and the continual
metrics, on one global step.

``report_to`` (TensorBoard, W&B, trackio, MLflow ... whatever transformers integrates) is served
by transformers' own integration callbacks, created once per run by :class:`RunTracker` rather
than once per domain by each domain's TRL trainer. Each domain's trainer forwards its log events
to them with its step shifted to the run's global step (:meth:`RunTracker.attach`), and at each
domain's end the trainer logs what only the continual run knows
(:meth:`RunTracker.log_domain_end`): the accuracy-matrix row, ACC/BWT/FWT/forgetting so far, the
domain's phase scores and the algorithm's statistics (replay counts, buffer sizes ...).

Why not TRL's callbacks as they are: each domain is a new TRL trainer whose step count starts at
0 and whose callbacks open a tracker run of their own (TensorBoard's in the domain's checkpoint
folder, which rotation deletes) and close it at the domain's end.

Names, as the trackers show them (transformers prefixes ``train/`` and ``eval/``):
``eval/score/<domain>`` (one point per accuracy-matrix row), ``eval/ACC``, ``eval/BWT``,
``eval/FWT``, ``eval/forgetting``, ``eval/phase/<domain>/<phase>``, ``eval/cl/<statistic>``, and
TRL's ``train/...`` step logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState
from transformers.integrations import get_reporting_integration_callbacks

from tau2.continual_learning.metrics import CL_METRIC_NAMES, compute_cl_metrics

__all__ = ["RunTracker", "domain_end_logs"]


class RunTracker:
    """transformers' reporting callbacks for ``args.report_to``, kept for the whole run.

    ``args`` is the run's configuration (a ``TrainingArguments``: the trackers read its output
    folder and record its values); ``is_main_process``: only the main process writes, as in a
    transformers ``Trainer``."""

    def __init__(self, args: Any, is_main_process: bool = True) -> None:
        self.args = args
        self.integrations = list(get_reporting_integration_callbacks(args.report_to))
        self.callbacks = [cls() for cls in self.integrations]
        self.state = TrainerState(
            is_world_process_zero=is_main_process, is_local_process_zero=is_main_process
        )
        self.control = TrainerControl()
        self._model: Any = None
        self._started = False

    def attach(self, trainer: Any, step_offset: int, model: Any = None) -> None:
        """Route a domain's TRL ``trainer``'s log events to this run's trackers, its step
        counted from ``step_offset`` (the global step at the domain's start): its own tracker
        callbacks are removed."""
        for integration in self.integrations:
            trainer.remove_callback(integration)
        if self.callbacks:
            trainer.add_callback(_ShiftedLogs(self, step_offset))
        self._model = model if model is not None else self._model

    def log(self, logs: Mapping[str, float], step: int) -> None:
        """Send ``logs`` to every tracker at global ``step`` (the run's tracker run begins with
        the first call)."""
        if not self.callbacks:
            return
        self.state.global_step = step
        self._begin()
        for callback in self.callbacks:
            callback.on_log(self.args, self.state, self.control, logs=dict(logs))

    def log_domain_end(self, record: Any, domain: str, statistics: Mapping[str, Any]) -> None:
        """The continual metrics after ``domain`` (:func:`domain_end_logs` of the run's
        ``record``: a :class:`~tau2.continual_learning.grpo.record.RunRecord`) at the run's
        global step."""
        self.log(domain_end_logs(record, domain, statistics), record.global_step)

    def close(self) -> None:
        """End the tracker run (TensorBoard closes its writer, W&B finishes its upload)."""
        if self._started:
            for callback in self.callbacks:
                callback.on_train_end(self.args, self.state, self.control, model=self._model)
            self._started = False

    def _begin(self) -> None:
        if self._started:
            return
        self._started = True
        for callback in self.callbacks:
            callback.on_train_begin(self.args, self.state, self.control, model=self._model)


class _ShiftedLogs(TrainerCallback):
    """A domain trainer's log events, forwarded to the run's trackers at the global step."""

    def __init__(self, tracker: RunTracker, step_offset: int) -> None:
        self.tracker = tracker
        self.step_offset = step_offset

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.tracker.log(logs or {}, self.step_offset + state.global_step)


def domain_end_logs(record: Any, domain: str, statistics: Mapping[str, Any]) -> dict[str, float]:
    """What the trackers get at ``domain``'s end: the latest accuracy-matrix row per domain,
    the CL metrics of the rows so far (those defined yet), ``domain``'s phase scores and the
    numbers among the algorithm's ``statistics`` (nested keys joined with ``/``)."""
    logs: dict[str, float] = {
        f"eval_score/{name}": float(score) for name, score in record.latest_scores().items()
    }
    if record.accuracy_matrix:
        baseline = record.baseline[: len(record.domains)] or None
        cl = compute_cl_metrics(record.accuracy_matrix, baseline)
        logs |= {f"eval_{k}": float(cl[k]) for k in CL_METRIC_NAMES if cl[k] is not None}
    phases = record.phase_scores.get(domain, {})
    logs |= {f"eval_phase/{domain}/{phase}": float(v) for phase, v in phases.items()}
    logs |= {f"eval_cl/{key}": value for key, value in _numbers(statistics)}
    return logs


def _numbers(tree: Any, prefix: str = "") -> list[tuple[str, float]]:
    """``(path, value)`` of the numeric leaves of nested mappings (booleans and text left out)."""
    if isinstance(tree, Mapping):
        return [
            pair
            for key, value in tree.items()
            for pair in _numbers(value, f"{prefix}/{key}" if prefix else str(key))
        ]
    if isinstance(tree, int | float) and not isinstance(tree, bool):
        return [(prefix, float(tree))]
    return []
