"""The supervised continual trainer: tasks in sequence, CL algorithm hooks, score matrices.

Per step: the new mini-batch goes through ``cl_algorithm.augment_batch`` (replay adds batches),
all batches run through the model in one forward pass, the loss is the weight-averaged
per-sample loss (cross-entropy / soft cross-entropy for classification, MSE for regression)
plus ``cl_algorithm.extra_loss``; a non-finite loss skips the update (counted; ``K`` in a row
raise :class:`LossExplosionError`). One optimizer and one ExponentialLR schedule (ELRD,
stepped per batch) live across all tasks unless ``reset_optimizer``.

After every epoch every known task is evaluated (``epoch_history``, "monitoring forgetting");
the evaluation after a task's last epoch is that task's row of the score matrix, from which
:meth:`ContinualTrainer.metrics` computes ACC, BWT, FWT and forgetting.

What algorithms can read on the trainer: ``model``, ``optimizer``, ``device``, ``config``,
``current_task_id``, ``current_task_name``, ``current_epoch``, ``num_epochs``, ``global_step``,
``last_step`` (the step's batches with detached ``outputs`` and per-sample ``losses``),
``task_classes`` and :meth:`per_sample_loss`.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import tau2.continual_learning.supervised.algorithms  # noqa: F401  (registers the supervised methods)
from tau2.continual_learning.cl_algorithm import SUPERVISED_ALGORITHMS, AlgorithmSlot, CLAlgorithm
from tau2.continual_learning.metrics import compute_cl_metrics
from tau2.continual_learning.supervised.batch import Batch
from tau2.continual_learning.supervised.config import ContinualTrainerConfig, load_config
from tau2.continual_learning.supervised.models import freeze_submodules

logger = logging.getLogger(__name__)


class LossExplosionError(RuntimeError):
    """Raised after ``max_consecutive_nan`` non-finite losses in a row."""


@dataclass
class StepRecord:
    """What happened in the last optimisation step (tensors detached)."""

    batches: list[Batch]
    loss: float
    skipped: bool = False


@dataclass
class _Task:
    name: str
    loader: DataLoader
    classes: tuple[int, ...] | None = None
    trained: bool = False


@dataclass
class TaskResult:
    """Returned by :meth:`ContinualTrainer.train_task`."""

    task_id: int
    task_name: str
    scores: dict[str, list[float | None]]
    train_loss: float
    wall_s: float
    skipped_steps: int = 0
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)


def build_cl_algorithm(name: str, params: dict[str, Any]) -> CLAlgorithm:
    """Instantiate a registered algorithm; bad parameters name the algorithm and its options."""
    cls = SUPERVISED_ALGORITHMS.get(name)
    try:
        return cls(**params)
    except TypeError as err:
        allowed = []
        for klass in cls.__mro__:  # subclasses forward **kwargs to their parents
            if "__init__" in vars(klass):
                params_of = inspect.signature(klass.__init__).parameters.values()
                allowed += [
                    p.name
                    for p in params_of
                    if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
                ]
                if not any(p.kind is p.VAR_KEYWORD for p in params_of):
                    break
        raise ValueError(
            f"cl_params {sorted(params)} invalid for {name!r} ({err}); allowed: {allowed}"
        ) from None


class ContinualTrainer:
    """Train one model on a sequence of tasks with a pluggable :class:`CLAlgorithm`."""

    cl_algorithm = AlgorithmSlot()

    def __init__(
        self,
        model: nn.Module,
        config: ContinualTrainerConfig | dict[str, Any] | str | Path | None = None,
        cl_algorithm: CLAlgorithm | None = None,
    ) -> None:
        self.config = load_config(config)
        cfg = self.config
        if cfg.seed is not None:
            torch.manual_seed(cfg.seed)
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
        )
        self.use_amp = cfg.mixed_precision and self.device.type == "cuda"
        self.model = model.to(self.device)
        self._build_optimizer()
        self.tasks: list[_Task] = []
        self.score_matrices: dict[str, list[list[float | None]]] = {s: [] for s in self.scenarios}
        self.baseline: dict[str, list[float | None]] | None = None
        self.epoch_history: list[dict[str, Any]] = []
        self.task_classes: dict[int, tuple[int, ...]] = {}
        self.global_step = 0
        self.skipped_steps = 0
        self._consecutive_bad = 0
        self.current_task_id = -1
        self.current_task_name = ""
        self.current_epoch = 0
        self.num_epochs = 0
        self.last_step: StepRecord | None = None
        self.cl_algorithm = cl_algorithm or build_cl_algorithm(
            cfg.cl_algorithm, dict(cfg.cl_params)
        )

    # -- setup ---------------------------------------------------------------------------------
    @property
    def is_classification(self) -> bool:
        return self.config.task_type == "classification"

    @property
    def scenarios(self) -> tuple[str, ...]:
        """Evaluation scenarios: the configured ones for classification, ``("regression",)``."""
        return self.config.eval_scenarios if self.is_classification else ("regression",)

    def _build_optimizer(self) -> None:
        cfg = self.config
        params = list(self.model.parameters())
        if cfg.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        else:
            cls = {
                "adam": torch.optim.Adam,
                "adamw": torch.optim.AdamW,
                "adagrad": torch.optim.Adagrad,
            }[cfg.optimizer]
            self.optimizer = cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(
            self.optimizer, gamma=cfg.lr_decay_gamma
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)

    def declare_tasks(self, tasks: Sequence[tuple[str, DataLoader, Sequence[int] | None]]) -> None:
        """Announce every task's ``(name, eval_loader, classes)`` up front, so each row of the
        score matrix covers all tasks (needed for FWT). Call before training."""
        if any(t.trained for t in self.tasks):
            raise RuntimeError("declare_tasks must be called before the first train_task")
        self.tasks = [_Task(n, loader, None if c is None else tuple(c)) for n, loader, c in tasks]
        for i, t in enumerate(self.tasks):
            if t.classes is not None:
                self.task_classes[i] = t.classes

    def evaluate_baseline(self) -> dict[str, list[float | None]]:
        """Scores of the model as it is now (untrained) on every declared task: FWT's ``b``."""
        self.baseline = self.evaluate_all()
        return self.baseline

    # -- losses --------------------------------------------------------------------------------
    def per_sample_loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Per-sample loss: CE (or soft CE against ``soft_targets``) / MSE (against ``y`` or
        ``soft_targets``)."""
        outputs = outputs.float()
        if self.is_classification:
            if batch.soft_targets is not None:
                return -(F.softmax(batch.soft_targets.float(), 1) * F.log_softmax(outputs, 1)).sum(
                    1
                )
            return F.cross_entropy(outputs, batch.y, reduction="none")
        target = batch.y if batch.soft_targets is None else batch.soft_targets
        return (
            F.mse_loss(outputs, target.float().reshape(outputs.shape), reduction="none")
            .flatten(1)
            .mean(1)
        )

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast("cuda") if self.use_amp else contextlib.nullcontext()

    def _forward(self, batches: list[Batch]) -> torch.Tensor:
        """One forward pass over all batches; sets ``outputs``/``losses``; returns the loss."""
        sizes = [len(b) for b in batches]
        x = torch.cat([b.x for b in batches]) if len(batches) > 1 else batches[0].x
        with self._autocast():
            if hasattr(self.model, "forward_with_aux"):
                outputs, aux = self.model.forward_with_aux(x)
            else:
                outputs, aux = self.model(x), None
        numerator = torch.zeros((), device=self.device)
        denominator = 0.0
        aux_parts = aux.split(sizes) if aux is not None else [None] * len(batches)
        for batch, out, extra in zip(batches, outputs.split(sizes), aux_parts, strict=True):
            batch.outputs = out
            batch.losses = self.per_sample_loss(out, batch)
            total = batch.losses if extra is None else batch.losses + extra.float()
            numerator = numerator + batch.weight * total.sum()
            denominator += batch.weight * len(batch)
        return numerator / max(denominator, 1e-12)

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> float | None:
        new = Batch(x, y, "new", task_ids=torch.full((len(x),), self.current_task_id)).to(
            self.device
        )
        batches = self.cl_algorithm.augment_batch([new], self.current_task_name)
        loss = self._forward(batches)
        extra = self.cl_algorithm.extra_loss(self.model, batches, self.current_task_name)
        if extra is not None:
            loss = loss + extra
        self.optimizer.zero_grad(set_to_none=True)
        skipped = not bool(torch.isfinite(loss))
        if skipped:
            self.skipped_steps += 1
            self._consecutive_bad += 1
            logger.warning(
                "non-finite loss at step %d (task %s): update skipped",
                self.global_step,
                self.current_task_name,
            )
            if self._consecutive_bad >= self.config.max_consecutive_nan:
                raise LossExplosionError(
                    f"{self._consecutive_bad} non-finite losses in a row on task {self.current_task_name!r} "
                    f"(max_consecutive_nan={self.config.max_consecutive_nan}): the run diverged; lower lr "
                    "or the loss weights"
                )
        else:
            self._consecutive_bad = 0
            self.scaler.scale(loss).backward()
            if self.config.grad_clip_norm is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
        for b in batches:
            b.outputs = None if b.outputs is None else b.outputs.detach()
            b.losses = None if b.losses is None else b.losses.detach()
        self.last_step = StepRecord(batches, float(loss.detach()), skipped)
        self.global_step += 1
        self.cl_algorithm.post_step_hook(self, self.current_task_name)
        return None if skipped else float(loss.detach())

    # -- training ------------------------------------------------------------------------------
    def _register(
        self, task_id: int, task_name: str, val_loader: DataLoader, classes: Sequence[int] | None
    ) -> None:
        trained = sum(t.trained for t in self.tasks)
        if task_id != trained:
            raise ValueError(
                f"task_id={task_id} is invalid; allowed: {trained} (tasks are trained in order 0, 1, ...)"
            )
        if task_id < len(self.tasks):
            task = self.tasks[task_id]
            if task.name != task_name:
                raise ValueError(f"task {task_id} was declared as {task.name!r}, not {task_name!r}")
            task.loader = val_loader
        else:
            self.tasks.append(_Task(task_name, val_loader))
        if classes is not None:
            self.tasks[task_id].classes = tuple(int(c) for c in classes)
            self.task_classes[task_id] = self.tasks[task_id].classes

    def train_task(
        self,
        train_loader: DataLoader,
        val_loader: DataLoader,
        task_id: int,
        task_name: str,
        num_epochs: int,
        classes: Sequence[int] | None = None,
    ) -> TaskResult:
        """Train on one task, evaluating every known task after each epoch.

        ``classes`` (for task-IL evaluation) default to the labels seen in training.
        """
        if num_epochs < 1:
            raise ValueError(f"num_epochs={num_epochs!r} is invalid; allowed: >= 1")
        self._register(task_id, task_name, val_loader, classes)
        self.current_task_id, self.current_task_name, self.num_epochs = (
            task_id,
            task_name,
            num_epochs,
        )
        if task_id > 0 and self.config.reset_optimizer:
            self._build_optimizer()
        if task_id > 0 and self.config.freeze_after_first_task:
            freeze_submodules(self.model, self.config.freeze_after_first_task)
        self.cl_algorithm.pre_task_hook(self, task_name)
        start, skipped_before = time.perf_counter(), self.skipped_steps
        seen_labels: set[int] = set()
        scores: dict[str, list[float | None]] = {}
        mean_loss = float("nan")
        for epoch in range(num_epochs):
            self.current_epoch = epoch
            self.model.train()
            losses = []
            bar = tqdm(
                train_loader,
                desc=f"{task_name} epoch {epoch + 1}/{num_epochs}",
                leave=False,
                disable=not self.config.progress_bar,
            )
            for x, y in bar:
                if self.is_classification and task_id not in self.task_classes:
                    seen_labels.update(int(c) for c in torch.unique(y))
                loss = self._train_step(x, y)
                if loss is not None:
                    losses.append(loss)
                    bar.set_postfix(loss=f"{loss:.4f}")
            if seen_labels and task_id not in self.task_classes:
                self.task_classes[task_id] = self.tasks[task_id].classes = tuple(
                    sorted(seen_labels)
                )
            mean_loss = sum(losses) / len(losses) if losses else float("nan")
            if self.config.eval_every_epoch or epoch == num_epochs - 1:
                scores = self.evaluate_all()
                self.epoch_history.append(
                    {
                        "task_id": task_id,
                        "task_name": task_name,
                        "epoch": epoch,
                        "train_loss": mean_loss,
                        "scores": scores,
                    }
                )
                logger.info(
                    "task %s epoch %d: loss %.4f scores %s", task_name, epoch + 1, mean_loss, scores
                )
        self.tasks[task_id].trained = True
        for scenario, row in scores.items():
            self.score_matrices[scenario].append(row)
        self.cl_algorithm.post_task_hook(self, task_name)
        result = TaskResult(
            task_id,
            task_name,
            scores,
            mean_loss,
            time.perf_counter() - start,
            self.skipped_steps - skipped_before,
        )
        result.metrics = {s: self.metrics(s) for s in self.scenarios}
        return result

    def fit(
        self, tasks: Sequence[Any], num_epochs: int, batch_size: int = 32, seed: int = 0
    ) -> dict[str, dict[str, Any]]:
        """Declare every task (for FWT), evaluate the untrained baseline, train them in order and
        return the metrics per scenario. ``tasks`` are :class:`~.data.TaskData`."""
        loaders = [
            t.loaders(batch_size, seed + i, self.config.eval_batch_size)
            for i, t in enumerate(tasks)
        ]
        self.declare_tasks(
            [(t.name, test, t.classes) for t, (_, test) in zip(tasks, loaders, strict=True)]
        )
        self.evaluate_baseline()
        for i, (task, (train, test)) in enumerate(zip(tasks, loaders, strict=True)):
            self.train_task(train, test, i, task.name, num_epochs, task.classes)
        return {s: self.metrics(s) for s in self.scenarios}

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(
        self, loader: DataLoader, classes: Sequence[int] | None = None, scenario: str = "class_il"
    ) -> float:
        """Accuracy (class-IL, or task-IL with logits masked to ``classes``) or MSE/NMSE."""
        self.model.eval()
        correct = count = 0
        err = ref = 0.0
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device)
            out = self.model(x).float()
            if self.is_classification:
                if scenario == "task_il":
                    if classes is None:
                        raise ValueError("task-IL evaluation needs the task's classes")
                    mask = torch.full_like(out, float("-inf"))
                    mask[:, list(classes)] = 0.0
                    out = out + mask
                correct += int((out.argmax(1) == y).sum())
                count += len(y)
            else:
                y = y.float().reshape(out.shape)
                err += float((out - y).pow(2).sum())
                ref += float(y.pow(2).sum())
                count += y.numel()
        if count == 0:
            raise ValueError("evaluation loader is empty")
        if self.is_classification:
            return correct / count
        if self.config.regression_score == "nmse":
            return err / max(ref, 1e-12)
        return err / count

    def evaluate_all(self) -> dict[str, list[float | None]]:
        """Scores on every known task, per scenario."""
        return {s: [self._score(i, s) for i in range(len(self.tasks))] for s in self.scenarios}

    def _score(self, task_id: int, scenario: str) -> float | None:
        classes = self.task_classes.get(task_id)
        if scenario == "task_il" and classes is None:
            return None  # classes not known yet (undeclared task before its first epoch)
        return self.evaluate(self.tasks[task_id].loader, classes, scenario)

    def metrics(self, scenario: str | None = None) -> dict[str, Any]:
        """ACC, BWT, FWT, forgetting of the score matrix (first scenario by default)."""
        scenario = scenario or self.scenarios[0]
        if scenario not in self.score_matrices:
            raise ValueError(
                f"scenario={scenario!r} is invalid; allowed: {list(self.score_matrices)}"
            )
        baseline = None if self.baseline is None else self.baseline[scenario]
        if baseline is not None and any(b is None for b in baseline):
            baseline = None
        return compute_cl_metrics(
            self.score_matrices[scenario], baseline, self.config.higher_is_better
        )

    def get_statistics(self) -> dict[str, Any]:
        """Counters and the algorithm's statistics."""
        return {
            "global_step": self.global_step,
            "skipped_steps": self.skipped_steps,
            "lr": self.optimizer.param_groups[0]["lr"],
            "cl_algorithm": self.cl_algorithm.get_statistics(),
        }
