"""The unit of data that flows between the supervised trainer and the CL algorithms."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch

BatchKind = Literal["new", "replay", "generated"]


@dataclass
class Batch:
    """A mini-batch plus what the loss needs to know about it.

    ``soft_targets`` (stored logits for classification, stored outputs for regression) switch
    the loss to soft cross-entropy / MSE against them; ``weight`` scales the batch's samples
    in the step's weighted mean loss; ``indices`` are buffer slots (for LARS score refresh).
    The trainer fills ``outputs`` and ``losses`` (per-sample) after the forward pass.
    """

    x: torch.Tensor
    y: torch.Tensor
    kind: BatchKind = "new"
    weight: float = 1.0
    soft_targets: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    task_ids: torch.Tensor | None = None
    outputs: torch.Tensor | None = field(default=None, repr=False)
    losses: torch.Tensor | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """A copy with every tensor on ``device`` (non-blocking where possible)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return replace(
            self,
            x=move(self.x),
            y=move(self.y),
            soft_targets=move(self.soft_targets),
            task_ids=move(self.task_ids),
        )
