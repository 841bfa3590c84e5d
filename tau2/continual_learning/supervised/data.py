"""Task streams for the supervised trainer, all offline.

* :func:`split_digits` - scikit-learn's bundled 8x8 digits (no download), 5 tasks of 2 classes;
* :func:`permuted_digits` - the same images under a fixed random pixel permutation per task;
* :func:`tensor_tasks` - your own tensors, one ``(x, y)`` (random train/test split) or
  ``(x_train, y_train, x_test, y_test)`` tuple per task;
* :func:`load_task_file` - a ``torch.save``-d list of such tuples (or ``{"tasks": [{"name",
  "x", "y"}, ...]}``), the file format of the paper-table command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

DIGITS_IMAGE_SHAPE = (1, 8, 8)


@dataclass
class TaskData:
    """One task: train and test tensors, and its classes (``None`` for regression)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[int, ...] | None = None

    def loaders(
        self, batch_size: int = 32, seed: int = 0, eval_batch_size: int = 512
    ) -> tuple[DataLoader, DataLoader]:
        """A shuffled (seeded) train loader and a sequential test loader."""
        gen = torch.Generator().manual_seed(seed)
        train = DataLoader(
            TensorDataset(self.x_train, self.y_train),
            batch_size=batch_size,
            shuffle=True,
            generator=gen,
        )
        test = DataLoader(TensorDataset(self.x_test, self.y_test), batch_size=eval_batch_size)
        return train, test


def _split(
    n: int, test_fraction: float, rng: np.random.Generator, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Train/test indices; stratified by label when labels are given."""
    if not 0 < test_fraction < 1:
        raise ValueError(
            f"test_fraction={test_fraction!r} is invalid; allowed: 0 < test_fraction < 1"
        )
    groups = (
        [np.arange(n)]
        if labels is None
        else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    )
    train, test = [], []
    for idx in groups:
        idx = rng.permutation(idx)
        k = max(1, round(len(idx) * test_fraction))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _digits(
    test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    tr, te = _split(len(y), test_fraction, np.random.default_rng(seed), y)
    return x[tr], y[tr], x[te], y[te]


def split_digits(
    n_tasks: int = 5,
    test_fraction: float = 0.2,
    seed: int = 0,
    class_order: Sequence[int] | None = None,
) -> list[TaskData]:
    """Digits 0-9 split into ``n_tasks`` tasks of ``10 / n_tasks`` classes (in ``class_order``)."""
    order = list(range(10)) if class_order is None else [int(c) for c in class_order]
    if sorted(order) != list(range(10)):
        raise ValueError(f"class_order={class_order!r} is invalid; allowed: a permutation of 0..9")
    if n_tasks < 1 or 10 % n_tasks:
        raise ValueError(f"n_tasks={n_tasks!r} is invalid; allowed: 1, 2, 5 or 10")
    xtr, ytr, xte, yte = _digits(test_fraction, seed)
    per = 10 // n_tasks
    tasks = []
    for t in range(n_tasks):
        classes = tuple(order[t * per : (t + 1) * per])
        mtr, mte = np.isin(ytr, classes), np.isin(yte, classes)
        tasks.append(
            TaskData(
                f"digits_{'_'.join(map(str, classes))}",
                torch.from_numpy(xtr[mtr]),
                torch.from_numpy(ytr[mtr]),
                torch.from_numpy(xte[mte]),
                torch.from_numpy(yte[mte]),
                classes,
            )
        )
    return tasks


def permuted_digits(n_tasks: int = 5, test_fraction: float = 0.2, seed: int = 0) -> list[TaskData]:
    """All ten digits per task; task 0 unpermuted, task t under a fixed random pixel permutation."""
    if n_tasks < 1:
        raise ValueError(f"n_tasks={n_tasks!r} is invalid; allowed: >= 1")
    xtr, ytr, xte, yte = _digits(test_fraction, seed)
    rng = np.random.default_rng(seed + 1)
    tasks = []
    for t in range(n_tasks):
        perm = np.arange(64) if t == 0 else rng.permutation(64)
        tasks.append(
            TaskData(
                f"permuted_{t}",
                torch.from_numpy(xtr[:, perm].copy()),
                torch.from_numpy(ytr),
                torch.from_numpy(xte[:, perm].copy()),
                torch.from_numpy(yte),
                tuple(range(10)),
            )
        )
    return tasks


def tensor_tasks(
    tasks: Sequence[Sequence[torch.Tensor]],
    names: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> list[TaskData]:
    """Tasks from your own tensors: ``(x, y)`` pairs are split randomly (stratified for integer
    labels), ``(x_train, y_train, x_test, y_test)`` quadruples are used as given. Integer
    targets make a classification task whose classes are the labels present."""
    if names is not None and len(names) != len(tasks):
        raise ValueError(f"names has {len(names)} entries but there are {len(tasks)} tasks")
    out = []
    rng = np.random.default_rng(seed)
    for t, parts in enumerate(tasks):
        parts = [torch.as_tensor(p) for p in parts]
        if len(parts) == 2:
            x, y = parts
            if len(x) != len(y):
                raise ValueError(f"task {t}: x has {len(x)} rows but y has {len(y)}")
            labels = y.numpy() if not y.is_floating_point() and y.dim() == 1 else None
            tr, te = _split(len(x), test_fraction, rng, labels)
            parts = [x[tr], y[tr], x[te], y[te]]
        elif len(parts) != 4:
            raise ValueError(
                f"task {t} has {len(parts)} tensors; allowed: (x, y) or (x_train, y_train, x_test, y_test)"
            )
        y_all = torch.cat([parts[1], parts[3]])
        classes = None if y_all.is_floating_point() else tuple(int(c) for c in torch.unique(y_all))
        out.append(TaskData(names[t] if names else f"task_{t}", *parts, classes=classes))
    return out


def load_task_file(path: str | Path, test_fraction: float = 0.2, seed: int = 0) -> list[TaskData]:
    """Tasks from a ``torch.save`` file: a list of ``(x, y)`` / quadruple tuples, or
    ``{"tasks": [{"name": ..., "x": ..., "y": ...}, ...]}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file {str(path)!r} does not exist")
    raw = torch.load(path, weights_only=True)
    if isinstance(raw, dict):
        entries = raw.get("tasks")
        if not isinstance(entries, list):
            raise ValueError(f"{path}: a dict task file needs a 'tasks' list")
        names = [str(e.get("name", f"task_{i}")) for i, e in enumerate(entries)]
        pairs = [(e["x"], e["y"]) for e in entries]
        return tensor_tasks(pairs, names, test_fraction, seed)
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError(
            f"{path}: expected a non-empty list of (x, y) tuples, got {type(raw).__name__}"
        )
    return tensor_tasks(raw, None, test_fraction, seed)


def synthetic_channel_tasks(
    scenarios: Sequence[tuple[str, float, float]] = (
        ("S1", 0.01, 30.0),
        ("S2", 0.05, 20.0),
        ("S3", 0.1, 10.0),
    ),
    num_sequences: int = 400,
    seq_len: int = 16,
    num_paths: int = 8,
    seed: int = 0,
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Channel-prediction demo data: per scenario ``(name, normalised Doppler, SNR dB)`` a
    sum-of-sinusoids (Jakes) fading channel; ``x`` = ``seq_len`` noisy past gains as
    (real, imag) ``(N, seq_len, 2)``, ``y`` = the next clean gain ``(N, 2)``."""
    rng = np.random.default_rng(seed)
    out = []
    t = np.arange(seq_len + 1)
    for name, doppler, snr_db in scenarios:
        angles = rng.uniform(0, 2 * np.pi, (num_sequences, num_paths, 1))
        phases = rng.uniform(0, 2 * np.pi, (num_sequences, num_paths, 1))
        start = rng.integers(0, 1000, (num_sequences, 1, 1))
        h = np.exp(1j * (2 * np.pi * doppler * np.cos(angles) * (t + start) + phases)).sum(
            1
        ) / np.sqrt(num_paths)
        noise = (rng.standard_normal(h.shape) + 1j * rng.standard_normal(h.shape)) * np.sqrt(
            0.5 / 10 ** (snr_db / 10)
        )
        noisy = h + noise
        x = np.stack([noisy[:, :-1].real, noisy[:, :-1].imag], -1).astype(np.float32)
        y = np.stack([h[:, -1].real, h[:, -1].imag], -1).astype(np.float32)
        out.append((name, torch.from_numpy(x), torch.from_numpy(y)))
    return out
