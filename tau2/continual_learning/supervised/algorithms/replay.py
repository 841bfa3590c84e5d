"""Tensor-level replay methods for the supervised trainer, as registered ``CLAlgorithm``s.

All replay variants share :class:`ExperienceReplay`: a CPU :class:`TensorMemory` filled from the
new batches during one epoch of each task, so every sample is offered once and the reservoir
guarantee holds (``insert_epoch="last"``, the default, fills it while the task's last epoch runs,
so replay during a task draws on earlier tasks, like filling the buffer after the task;
``"first"`` fills it during the first epoch; ``"every"`` offers every sample every epoch), and
dual-stream batching:
every step gets one replay mini-batch beside the new one, sized so that replayed samples are
``replay_ratio`` of the step (0.5 = as many replayed as new samples).

Registered names: ``naive``, ``er``, ``er_reservoir``, ``er_lars``, ``brs``, ``brs_lars``,
``iba``, ``soft_replay``, ``mir``, ``vib_replay``, ``distill``, ``kmeans_memory``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tau2.continual_learning.cl_algorithm import SUPERVISED_ALGORITHMS, CLAlgorithm
from tau2.continual_learning.insertion_policies import POLICIES
from tau2.continual_learning.supervised.batch import Batch
from tau2.continual_learning.supervised.memory import (
    KMeansMemory,
    TensorMemory,
    make_augmentation,
    mir_retrieve,
)
from tau2.continual_learning.supervised.models import freeze_submodules

logger = logging.getLogger(__name__)

BUCKETS = ("auto", "label", "task")
RETRIEVALS = ("random", "mir")
INSERT_EPOCHS = ("last", "first", "every")


def frozen_snapshot(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` in eval mode (teacher / previous model)."""
    teacher = copy.deepcopy(model).eval()
    teacher.requires_grad_(False)
    return teacher


@SUPERVISED_ALGORITHMS.register("naive")
class NaiveCL(CLAlgorithm):
    """Fine-tuning with no replay: the lower bound every method is compared with."""


@SUPERVISED_ALGORITHMS.register("er")
class ExperienceReplay(CLAlgorithm):
    """Experience replay with dual-stream batching.

    ``insertion``: an insertion policy name (default ``class_balanced``: an equal, uniformly
    random share per bucket = "simple ER" with a random subset per class/task).
    ``bucket``: what balances - ``label`` (class), ``task``, or ``auto`` (label for
    classification, task for regression). ``retrieval``: ``random`` or ``mir``.
    ``augment``: read-time augmentation (IBA). ``soft_targets``: replay against stored logits
    (soft cross-entropy), refreshed with the trained model at the end of each task.
    """

    default_insertion = "class_balanced"
    default_retrieval = "random"
    default_augment: str | None = None
    default_soft_targets = False

    def __init__(
        self,
        memory_size: int = 200,
        replay_ratio: float = 0.5,
        replay_weight: float = 1.0,
        insertion: str | None = None,
        bucket: str = "auto",
        retrieval: str | None = None,
        mir_candidates: int = 64,
        augment: Any = None,
        augment_strength: float | None = None,
        image_shape: Sequence[int] | None = None,
        soft_targets: bool | None = None,
        insert_epoch: str = "last",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.insertion = insertion or self.default_insertion
        self.retrieval = retrieval or self.default_retrieval
        self.soft_targets = self.default_soft_targets if soft_targets is None else soft_targets
        checks = [
            ("insertion", self.insertion, tuple(POLICIES)),
            ("bucket", bucket, BUCKETS),
            ("retrieval", self.retrieval, RETRIEVALS),
            ("insert_epoch", insert_epoch, INSERT_EPOCHS),
        ]
        for field_name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(
                    f"{self.name}: {field_name}={value!r} is invalid; allowed: {allowed}"
                )
        if not 0 <= replay_ratio < 1:
            raise ValueError(
                f"{self.name}: replay_ratio={replay_ratio!r} is invalid; allowed: 0 <= r < 1"
            )
        if replay_weight < 0:
            raise ValueError(
                f"{self.name}: replay_weight={replay_weight!r} is invalid; allowed: >= 0"
            )
        self.memory_size, self.replay_ratio, self.replay_weight = (
            memory_size,
            replay_ratio,
            replay_weight,
        )
        self.bucket, self.mir_candidates = bucket, mir_candidates
        self.insert_epoch = insert_epoch
        self.memory = TensorMemory(
            memory_size,
            self.insertion,
            seed,
            store_logits=self.soft_targets,
            augment=make_augmentation(
                augment or self.default_augment, augment_strength, image_shape
            ),
        )
        self.replayed = 0

    # -- batching ------------------------------------------------------------------------------
    def replay_size(self, new_size: int) -> int:
        """Replayed samples per step so that they make up ``replay_ratio`` of the step."""
        return round(new_size * self.replay_ratio / (1 - self.replay_ratio))

    def augment_batch(self, new_tasks: list[Any], current_domain: str) -> list[Any]:
        n = self.replay_size(len(new_tasks[0]))
        if n == 0 or len(self.memory) == 0:
            return list(new_tasks)
        replay = self._retrieve(new_tasks[0], n)
        replay.weight = self.replay_weight
        self.replayed += len(replay)
        return [*new_tasks, replay]

    def _retrieve(self, new: Batch, n: int) -> Batch:
        trainer = self._trainer
        if self.retrieval == "mir":
            lr = trainer.optimizer.param_groups[0]["lr"]
            return mir_retrieve(
                trainer.model,
                self.memory,
                new,
                n,
                trainer.per_sample_loss,
                lr,
                max(self.mir_candidates, n),
                trainer.device,
            )
        return self.memory.sample(n, trainer.device)

    # -- filling -------------------------------------------------------------------------------
    def buckets_of(self, batch: Batch, trainer: Any) -> list[Hashable]:
        """Bucket key per sample: its class label or its task."""
        by_label = self.bucket == "label" or (self.bucket == "auto" and trainer.is_classification)
        if by_label:
            if not trainer.is_classification:
                raise ValueError(f"{self.name}: bucket='label' needs a classification task")
            return batch.y.cpu().tolist()
        return [trainer.current_task_id] * len(batch)

    def post_step_hook(self, trainer: Any, domain: str) -> None:
        step = trainer.last_step
        for batch in step.batches:
            if batch.kind == "replay" and self.memory.policy.loss_aware and not step.skipped:
                self.memory.update_scores(batch.indices, batch.losses)
            elif batch.kind == "new" and self._inserting(trainer):
                self.insert(batch, trainer, None if step.skipped else batch.losses)

    def _inserting(self, trainer: Any) -> bool:
        if self.insert_epoch == "every":
            return True
        return trainer.current_epoch == (
            0 if self.insert_epoch == "first" else trainer.num_epochs - 1
        )

    def insert(self, batch: Batch, trainer: Any, scores: torch.Tensor | None) -> None:
        """Offer the new batch's samples to the memory."""
        self.memory.add(
            batch.x,
            batch.y,
            buckets=self.buckets_of(batch, trainer),
            scores=scores,
            logits=batch.outputs if self.soft_targets else None,
            task_id=trainer.current_task_id,
        )

    def post_task_hook(self, trainer: Any, domain: str) -> None:
        if not self.soft_targets or len(self.memory) == 0:
            return
        x, _, tasks = self.memory.tensors()
        idx = torch.nonzero(tasks == trainer.current_task_id).flatten()
        if len(idx):
            trainer.model.eval()
            with torch.no_grad():
                self.memory.set_logits(idx, trainer.model(x[idx].to(trainer.device)))

    def get_statistics(self) -> dict[str, Any]:
        policy = self.memory.policy
        return {
            "algorithm": self.name,
            "memory_size": len(self.memory),
            "capacity": self.memory_size,
            "seen": policy.seen,
            "replayed": self.replayed,
            "buckets": {str(k): v for k, v in policy.bucket_counts().items()},
        }


def _variant(name: str, class_name: str, doc: str, **defaults: Any) -> type[ExperienceReplay]:
    """Register an :class:`ExperienceReplay` whose only difference is its defaults."""
    attrs = {f"default_{key}": value for key, value in defaults.items()}
    cls = type(class_name, (ExperienceReplay,), {"__doc__": doc, "__module__": __name__, **attrs})
    return SUPERVISED_ALGORITHMS.register(name)(cls)


ReservoirER = _variant(
    "er_reservoir",
    "ReservoirER",
    "ER with a reservoir-sampled memory (Vitter's algorithm R).",
    insertion="reservoir",
)
LossAwareER = _variant(
    "er_lars",
    "LossAwareER",
    "ER + reservoir + LARS: low-loss items are evicted first; replay refreshes their loss.",
    insertion="lars",
)
BalancedReservoirER = _variant(
    "brs",
    "BalancedReservoirER",
    "ER with balanced reservoir sampling (victim from the most represented class).",
    insertion="brs",
)
BalancedLossAwareER = _variant(
    "brs_lars", "BalancedLossAwareER", "ER with BRS + LARS victim selection.", insertion="brs_lars"
)
AugmentedER = _variant(
    "iba",
    "AugmentedER",
    "ER with independent buffer augmentation: raw samples stored, augmented on every read.",
    augment="noise",
)
SoftTargetER = _variant(
    "soft_replay",
    "SoftTargetER",
    "ER against stored logits with soft cross-entropy.",
    soft_targets=True,
)
MaximallyInterferedER = _variant(
    "mir", "MaximallyInterferedER", "ER with maximally interfered retrieval.", retrieval="mir"
)


@SUPERVISED_ALGORITHMS.register("vib_replay")
class VIBReplay(ExperienceReplay):
    """Replay for a :class:`~tau2.continual_learning.supervised.models.VIBNet` (its KL and
    reconstruction terms enter through ``forward_with_aux``); ``freeze_encoder`` freezes the
    encoder from the second task on."""

    def __init__(self, freeze_encoder: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.freeze_encoder = freeze_encoder

    def pre_task_hook(self, trainer: Any, domain: str) -> None:
        if not hasattr(trainer.model, "forward_with_aux"):
            raise ValueError(
                f"vib_replay needs a VIB model (forward_with_aux), got {type(trainer.model).__name__}"
            )
        if self.freeze_encoder and trainer.current_task_id > 0:
            freeze_submodules(trainer.model, ["encoder"])


@SUPERVISED_ALGORITHMS.register("distill")
class DistillationER(ExperienceReplay):
    """ER plus distillation on the replayed samples against a frozen snapshot of the model
    taken at the start of each task (CLEAR-style behaviour cloning): ``distill_weight`` *
    KL between temperature-softened distributions (default), or MSE between raw outputs (for
    regression; on classifier logits MSE can blow up once logits grow large)."""

    def __init__(
        self,
        distill_weight: float = 1.0,
        distill_loss: str = "kl",
        temperature: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if distill_loss not in ("mse", "kl"):
            raise ValueError(
                f"distill: distill_loss={distill_loss!r} is invalid; allowed: 'mse', 'kl'"
            )
        self.distill_weight, self.distill_loss, self.temperature = (
            distill_weight,
            distill_loss,
            temperature,
        )
        self._teacher: nn.Module | None = None

    def pre_task_hook(self, trainer: Any, domain: str) -> None:
        self._teacher = frozen_snapshot(trainer.model) if trainer.current_task_id > 0 else None

    def extra_loss(self, model: Any, batch: Any, current_domain: str) -> torch.Tensor | None:
        replays = [b for b in batch if b.kind == "replay" and b.outputs is not None]
        if self._teacher is None or not replays:
            return None
        x = torch.cat([b.x for b in replays])
        student = torch.cat([b.outputs for b in replays]).float()
        with torch.no_grad():
            teacher = self._teacher(x).float()
        if self.distill_loss == "mse":
            loss = F.mse_loss(student, teacher)
        else:
            t = self.temperature
            loss = (
                F.kl_div(
                    F.log_softmax(student / t, 1),
                    F.log_softmax(teacher / t, 1),
                    log_target=True,
                    reduction="batchmean",
                )
                * t
                * t
            )
        return self.distill_weight * loss


@SUPERVISED_ALGORITHMS.register("kmeans_memory")
class KMeansReplay(ExperienceReplay):
    """Replay of per-class (per-task for regression) k-means prototypes instead of raw samples;
    the memory is rebuilt at the end of every task."""

    def __init__(self, max_pending_per_bucket: int = 1000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kmeans = KMeansMemory(self.memory_size, kwargs.get("seed", 0), max_pending_per_bucket)
        self.memory = self.kmeans.memory

    def insert(self, batch: Batch, trainer: Any, scores: torch.Tensor | None) -> None:
        self.kmeans.observe(
            batch.x, batch.y, self.buckets_of(batch, trainer), trainer.current_task_id
        )

    def post_task_hook(self, trainer: Any, domain: str) -> None:
        self.kmeans.consolidate()
