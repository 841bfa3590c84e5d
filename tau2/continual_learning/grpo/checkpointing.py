"""Checkpoints of a continual run: atomic, rotated, and only as large as resuming needs.

Layout under ``<output_dir>/checkpoints``:

* ``end-of-domain-NN/``: written after domain ``NN`` was trained and evaluated: the model (in
  the dtype it trains in), the tokenizer, our state (``continual_state.pt``: position, matrix,
  CL state, the pass-rate curriculum's state, RNG), one trajectory buffer per rank (``buffer-rank-R.pkl``) and, while it is the
  checkpoint a resume would start from and the optimizer carries over to the next domain
  (``reset_optimizer_between_domains=False``), ``optimizer.pt``.
* ``domain-NN-<name>/checkpoint-S/``: TRL's mid-domain checkpoints (every ``save_steps`` within
  a domain), completed with the same state files of ours.
* ``latest``: a one-line pointer to the checkpoint a resume starts from. It moves only after a
  checkpoint is complete (by ``os.replace``), so a process killed at any moment leaves it
  pointing to a loadable checkpoint.

Retention: ``save_total_limit`` (default 1) domain-end checkpoints and, within the domain being
trained, as many mid-domain ones (rotated here, after ``latest`` has moved: TRL's own rotation
runs before its save callback, which would leave ``latest`` pointing at a deleted folder). A domain-end checkpoint supersedes its
domain's mid-domain ones, which are deleted; optimizer state is kept only in the ``latest``
checkpoint, and dropped once the run has finished (nothing resumes from it). TRL's own
checkpoints cannot be reused for the domain-end ones: each domain runs a new TRL trainer (a new
schedule and dataset), and TRL's folders do not carry our state, so ours are written here.

Loading (:meth:`Checkpointer.load`) restores the run record, the algorithm's state, the
curriculum's state, the trajectory buffer and the RNGs, and returns a :class:`ResumePoint`: what the next domain's TRL
trainer starts from (TRL's own checkpoint mid-domain, else the weights are loaded here and the
optimizer state, if any, waits for it). A *branch* continues a domain-end checkpoint under
another algorithm (:meth:`Checkpointer.load` with ``branch=True``).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState

from tau2.continual_learning.grpo.trajectory_buffer import TrajectoryBuffer

logger = logging.getLogger(__name__)

STATE_FILE = "continual_state.pt"
OPTIMIZER_FILE = "optimizer.pt"
LATEST = "latest"
END_PREFIX = "end-of-domain-"


def buffer_file(rank: int) -> str:
    """Each rank's trajectory buffer, restored by that rank on resume."""
    return f"buffer-rank-{rank}.pkl"


@dataclass
class ResumePoint:
    """Where a loaded checkpoint leaves the next domain's training (used once)."""

    trl_checkpoint: str | None = None
    """A mid-domain checkpoint: TRL restores model, optimizer, scheduler, its RNG and step."""
    optimizer_state: dict[str, Any] | None = None
    """A domain-end checkpoint's optimizer state, for the next domain's optimizer."""

    @property
    def mid_domain(self) -> bool:
        return self.trl_checkpoint is not None


class Checkpointer:
    """Writes, rotates and loads the checkpoints of one :class:`GRPOTrainer` run."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.root = Path(trainer.config.output_dir) / "checkpoints"
        limit = trainer.config.save_total_limit
        self.keep = max(1, int(limit)) if limit else 1
        self.state = PartialState()

    # -- writing ---------------------------------------------------------------------------
    def domain_folder(self, index: int, domain: str) -> Path:
        """Where TRL writes the mid-domain checkpoints of domain ``index``."""
        return self.root / f"domain-{index:02d}-{domain}"

    def complete_mid_domain(self, folder: Path) -> None:
        """Add our state to a mid-domain checkpoint TRL just wrote, then point ``latest`` at it."""
        self._write_own_state(folder, mid_domain=True)
        if self.state.is_main_process:
            self._point_latest(folder)
            steps = sorted(
                (p for p in folder.parent.glob("checkpoint-*") if p.is_dir()),
                key=lambda p: int(p.name.rpartition("-")[2]),
            )
            for old in steps[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
            self._drop_optimizers(except_for=folder)
        self.state.wait_for_everyone()

    def save_domain_end(self, final: bool) -> Path:
        """The domain-end checkpoint: staged in a hidden folder, renamed into place, pointed at,
        then older checkpoints rotated. ``final``: the run is complete, so no optimizer state."""
        trainer = self.trainer
        name = f"{END_PREFIX}{trainer.record.domain_index:02d}"
        staging = self.root / f".{name}.staging"
        if self.state.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            trainer.model.save_pretrained(staging / "model")
            trainer.tokenizer.save_pretrained(staging / "model")
            if trainer.optimizer is not None and not final and self.optimizer_carries_over:
                torch.save(trainer.optimizer.state_dict(), staging / OPTIMIZER_FILE)
        self.state.wait_for_everyone()
        self._write_own_state(staging, mid_domain=False)
        target = self.root / name
        if self.state.is_main_process:
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
            self._point_latest(target)
            self._rotate(target)
        self.state.wait_for_everyone()
        return target

    @property
    def optimizer_carries_over(self) -> bool:
        """Whether the next domain continues with this optimizer state (else a domain-end
        checkpoint needs none: ``reset_optimizer_between_domains`` starts each domain fresh)."""
        return not self.trainer.config.reset_optimizer_between_domains

    def _write_own_state(self, folder: Path, mid_domain: bool) -> None:
        trainer = self.trainer
        trainer.trajectory_buffer.save(folder / buffer_file(self.state.process_index))
        self.state.wait_for_everyone()
        if self.state.is_main_process:
            tmp = folder / f".{STATE_FILE}.tmp"
            torch.save(self.own_state(mid_domain), tmp)
            os.replace(tmp, folder / STATE_FILE)

    def own_state(self, mid_domain: bool) -> dict[str, Any]:
        """Our part of a checkpoint (TRL's files hold the rest mid-domain): the run record,
        the algorithm's name and state, the pass-rate curriculum's state (if any), the RNGs."""
        algorithm = self.trainer.cl_algorithm
        curriculum = self.trainer.step.curriculum
        return {
            **self.trainer.record.state_dict(),
            "mid_domain": mid_domain,
            "cl_algorithm": algorithm.name,
            "cl_state": algorithm.state_dict(),
            "curriculum": curriculum.state_dict() if curriculum is not None else None,
            "rng": rng_state(),
        }

    def _point_latest(self, folder: Path) -> None:
        pointer = self.root / ".latest.tmp"
        pointer.write_text(str(folder.resolve().relative_to(self.root.resolve())))
        os.replace(pointer, self.root / LATEST)

    def _rotate(self, newest: Path) -> None:
        """Keep the ``keep`` newest domain-end checkpoints; delete superseded mid-domain folders,
        stale staging folders and optimizer state that no resume needs."""
        ends = sorted(p for p in self.root.glob(f"{END_PREFIX}*") if p.is_dir())
        for old in ends[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        for folder in self.root.glob("domain-*"):
            shutil.rmtree(folder, ignore_errors=True)
        for stale in self.root.glob(f".{END_PREFIX}*.staging"):
            shutil.rmtree(stale, ignore_errors=True)
        self._drop_optimizers(except_for=newest)

    def _drop_optimizers(self, except_for: Path) -> None:
        for end in self.root.glob(f"{END_PREFIX}*"):
            if end.resolve() != except_for.resolve():
                (end / OPTIMIZER_FILE).unlink(missing_ok=True)

    # -- reading ---------------------------------------------------------------------------
    def load_configured(self) -> ResumePoint:
        """The config's ``resume_from_checkpoint`` or ``branch_from_checkpoint``, if any."""
        config = self.trainer.config
        if config.resume_from_checkpoint:
            return self.load(config.resume_from_checkpoint)
        if config.branch_from_checkpoint:
            return self.load(config.branch_from_checkpoint, branch=True)
        return ResumePoint()

    def load(self, path: str | os.PathLike[str], *, branch: bool = False) -> ResumePoint:
        """Restore a checkpoint (``<output_dir>/checkpoints``, its ``latest``, or one folder)
        into the trainer; training then continues where the run stopped, mid-domain included.

        ``branch=True`` continues a domain-end checkpoint under the trainer's algorithm, which
        may differ from the one that wrote it, so runs that share their first domains (say
        ``sequential`` and ``replay`` on a sequence's first domain) train them once. Model,
        trajectory buffer, record and RNG come from the checkpoint; the algorithm starts fresh
        and sees ``pre_task_hook`` and ``post_task_hook`` of each finished domain, in order,
        with that domain's scores as the latest. What an algorithm does in between (per step,
        on batches, through a loss) is not replayed, so a branch equals a full run of its
        algorithm where the finished domains' training did not depend on the algorithm: true of
        ``sequential``, ``replay`` and ``adaptive_replay`` on a first domain (nothing earlier to
        replay or probe; tested)."""
        trainer = self.trainer
        algorithm = trainer.cl_algorithm
        folder = self.resolve(path)
        state = torch.load(folder / STATE_FILE, weights_only=False)
        if state["domains"] != list(trainer.config.domains):
            raise ValueError(
                f"checkpoint {folder} is for domains {state['domains']}, config has "
                f"{trainer.config.domains}"
            )
        written_by = state["cl_algorithm"]
        if branch and state["mid_domain"]:
            raise ValueError(
                f"checkpoint {folder} is mid-domain: a branch starts at a domain end "
                "(checkpoints/end-of-domain-NN)"
            )
        if not branch and written_by != algorithm.name:
            raise ValueError(
                f"checkpoint {folder} was written by {written_by!r}, this trainer runs "
                f"{algorithm.name!r}: resume with {written_by!r}, or pass branch=True to "
                f"continue the finished domains under {algorithm.name!r}"
            )
        trainer.record.load_state_dict(state)
        if not branch:
            algorithm.load_state_dict(state["cl_state"])
        trainer.trajectory_buffer = TrajectoryBuffer.load(self.buffer_path(folder))
        curriculum = trainer.step.curriculum
        if curriculum is not None and state.get("curriculum") is not None:
            curriculum.load_state_dict(state["curriculum"])
        resume = ResumePoint()
        if state["mid_domain"]:
            resume.trl_checkpoint = str(folder)
        else:
            load_weights(trainer.model, folder / "model")
            optimizer_file = folder / OPTIMIZER_FILE
            if optimizer_file.is_file():
                resume.optimizer_state = torch.load(optimizer_file, weights_only=False)
        if branch:  # with the checkpoint's weights and buffer in place: the hooks may probe
            self._replay_domain_hooks()
        set_rng_state(state["rng"])  # last, so what the hooks drew does not shift the run
        logger.info(
            "%s from %s: domain %d, global step %d",
            f"Branched ({algorithm.name} after {written_by})" if branch else "Resumed",
            folder,
            trainer.record.domain_index,
            trainer.record.global_step,
        )
        return resume

    def _replay_domain_hooks(self) -> None:
        """A fresh algorithm's view of the finished domains' boundaries (a branch): each
        domain's ``pre_task_hook`` and ``post_task_hook``, with its own row as the latest."""
        trainer, record = self.trainer, self.trainer.record
        rows = record.accuracy_matrix
        try:
            for index, domain in enumerate(trainer.config.domains[: record.domain_index]):
                record.accuracy_matrix = rows[: index + 1]
                trainer.cl_algorithm.pre_task_hook(trainer.view, domain)
                trainer.cl_algorithm.post_task_hook(trainer.view, domain)
        finally:
            record.accuracy_matrix = rows

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        """A checkpoint folder from ``<output_dir>/checkpoints`` (its ``latest``) or a folder."""
        path = Path(path)
        if (path / LATEST).is_file():
            path = path / (path / LATEST).read_text().strip()
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a tau2-continual checkpoint (no {STATE_FILE})")
        return path

    def buffer_path(self, folder: Path) -> Path:
        """This rank's buffer in ``folder``; a clear error if the run had fewer ranks."""
        path = folder / buffer_file(self.state.process_index)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: the checkpoint was written by fewer processes than this run "
                f"has (rank {self.state.process_index}); resume with the same number of processes"
            )
        return path


def load_weights(model: Any, folder: Path) -> None:
    """Load saved weights (full model or PEFT adapter) into ``model`` in place."""
    from safetensors.torch import load_file

    adapter = folder / "adapter_model.safetensors"
    if adapter.is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(adapter)))
        return
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states (TRL saves its own only inside its checkpoints, and
    transformers offers no public getter; domain-end checkpoints need them too)."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
