"""Atomic, numbered checkpoint files: a crash leaves the previous ones loadable."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^phase_(\d+)\.pt$")


def save_atomic(state: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, fsync it, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def checkpoint_path(directory: Path, phase: int) -> Path:
    """Where the checkpoint written after ``phase`` completed phases lives."""
    return directory / f"phase_{phase:06d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def prune(directory: Path, keep: int | None) -> None:
    """Delete all but the newest ``keep`` checkpoints (``None`` keeps them all)."""
    if keep is None:
        return
    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        old.unlink()
        logger.debug("pruned checkpoint %s", old)


def load(path: Path) -> Any:
    """Load a checkpoint (plain containers of tensors, numbers, strings and bytes)."""
    return torch.load(path, map_location="cpu", weights_only=True)
