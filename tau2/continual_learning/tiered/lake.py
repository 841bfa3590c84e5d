"""The Lake: a disk-backed, memory-mapped replay store that stores each frame once.

Layout of a lake directory:

- ``lake.json``: the header (fields, capacities, and the committed ``count`` and ``frames``),
  replaced atomically on every commit;
- ``frames.memmap``: the observation frames, ``frame_capacity`` rows;
- ``frame_index.memmap``: per transition, the row of its observation; its next observation is
  always the row after it;
- ``<field>.memmap``: one file per other declared field (action, reward, ...);
- ``lake.lock``: held (``flock``) by the one process that writes.

Frames are deduplicated by content: a transition whose observation equals the previous
transition's next observation (the usual case inside an episode) reuses that frame, so a
stream of ``n`` transitions in ``e`` unbroken runs costs ``n + e`` frames instead of ``2 n``.
The last transition of an episode keeps its own terminal next frame; the next episode starts a
new run. Every file is a tensordict ``MemoryMappedTensor`` (sparse, so capacity costs no disk
until used); written and sampled pages are released from the RSS (see ``residency``).

Crash safety: data rows are written first, past the committed count, and only then is the
header replaced (``os.replace``); a process killed at any point leaves the old or the new
header, and both describe intact rows. With ``sync=True`` the data and the header are also
fsync'd in that order, which covers power loss too.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from tensordict import MemoryMappedTensor

from tau2.continual_learning.tiered.residency import LARGEST_FOLIO, release, release_rows

logger = logging.getLogger(__name__)

FORMAT = "tau2-lake"
VERSION = 1
HEADER = "lake.json"
FRAMES = "frames"
FRAME_INDEX = "frame_index"


class LakeError(RuntimeError):
    """Base class of the lake's own errors."""


class LakeFullError(LakeError):
    """An extend would pass the capacity; nothing of it was written."""


class LakeEmptyError(LakeError):
    """Sampling from a lake that holds no transition."""


class LakeLockedError(LakeError):
    """Another process holds the lake open for writing."""


@dataclass(frozen=True)
class Field:
    """Shape (of one item, without the batch dimension) and dtype of a stored field."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of one item."""
        n = torch.empty((), dtype=self.dtype).element_size()
        for d in self.shape:
            n *= d
        return n

    def to_json(self) -> dict:
        return {"shape": list(self.shape), "dtype": str(self.dtype).removeprefix("torch.")}

    @classmethod
    def from_json(cls, data: Mapping) -> Field:
        return cls(tuple(data["shape"]), getattr(torch, data["dtype"]))


def next_key(frame_key: str) -> str:
    """Name of the next-observation entry in batches: ``next_<frame_key>``."""
    return f"next_{frame_key}"


def check_batch(
    batch: Mapping[str, torch.Tensor], fields: Mapping[str, Field], frame_key: str
) -> int:
    """Validate a batch against the declared fields; return its length.

    Expected keys: every field, plus ``next_<frame_key>`` with the frame field's spec.
    """
    expected = {**fields, next_key(frame_key): fields[frame_key]}
    missing = sorted(set(expected) - set(batch))
    extra = sorted(set(batch) - set(expected))
    if missing or extra:
        raise ValueError(f"batch keys mismatch: missing {missing}, unexpected {extra}")
    n = None
    for key, spec in expected.items():
        value = batch[key]
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{key!r} must be a torch.Tensor, got {type(value).__name__}")
        if value.dtype != spec.dtype:
            raise TypeError(f"{key!r} has dtype {value.dtype}, declared {spec.dtype}")
        if value.dim() != len(spec.shape) + 1 or tuple(value.shape[1:]) != spec.shape:
            raise ValueError(f"{key!r} has shape {tuple(value.shape)}, expected (n, *{spec.shape})")
        if n is not None and value.shape[0] != n:
            raise ValueError(f"{key!r} has {value.shape[0]} rows, other fields have {n}")
        n = value.shape[0]
    return int(n)


def _write_json_atomic(path: Path, data: dict, sync: bool) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        if sync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if sync:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class Lake:
    """Disk-backed replay store with O(1) append and uniform sampling.

    Create with ``Lake.create``, reopen with ``Lake.open``. Capacity is fixed (no ring): an
    extend that does not fit raises ``LakeFullError`` and writes nothing, so nothing stored is
    ever overwritten. Batches are dicts of tensors: every declared field plus
    ``next_<frame_key>``; ``sample`` and ``get`` return the same keys.
    """

    def __init__(
        self,
        path: Path,
        header: dict,
        *,
        readonly: bool,
        sync: bool,
        max_resident_bytes: int,
        lock_fd: int | None,
    ) -> None:
        """Use ``Lake.create`` or ``Lake.open``."""
        self.path = path
        self.capacity: int = header["capacity"]
        self.frame_capacity: int = header["frame_capacity"]
        self.frame_key: str = header["frame_key"]
        self.fields: dict[str, Field] = {k: Field.from_json(v) for k, v in header["fields"].items()}
        self._count: int = header["count"]
        self._frames_used: int = header["frames"]
        self.readonly = readonly
        self.sync = sync
        self._lock_fd = lock_fd
        frame = self.fields[self.frame_key]
        self._frames = self._map(FRAMES, self.frame_capacity, frame)
        self._frame_index = self._map(FRAME_INDEX, self.capacity, Field((), torch.int64))
        self._columns = {
            k: self._map(k, self.capacity, f) for k, f in self.fields.items() if k != self.frame_key
        }
        # Rows i and i + 1 of the frames as one item: a sample's observation and next
        # observation come out of one gather, from adjacent bytes.
        stride = self._frames.stride()
        self._pairs = torch.as_strided(
            self._frames, (self.frame_capacity - 1, 2, *frame.shape), (stride[0], *stride)
        )
        # Gathers run in slices small enough that what a slice maps (worst case: two whole
        # folios per pair) stays within max_resident_bytes; each slice is released after it.
        self._slice = max(1, max_resident_bytes // (2 * frame.nbytes + 2 * LARGEST_FOLIO))

    def _map(self, name: str, rows: int, spec: Field) -> torch.Tensor:
        """Map (creating if missing) one field's file; a plain tensor over the mapped storage."""
        filename = self.path / f"{name}.memmap"
        shape = (rows, *spec.shape)
        if filename.exists():
            mapped = MemoryMappedTensor.from_filename(filename, dtype=spec.dtype, shape=shape)
        else:
            mapped = MemoryMappedTensor.empty(shape, dtype=spec.dtype, filename=filename)
        # The storage owns the mapping; results of indexing it should be ordinary tensors.
        return mapped.as_subclass(torch.Tensor)

    @staticmethod
    def _lock(path: Path) -> int:
        fd = os.open(path / "lake.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LakeLockedError(f"{path} is open for writing by another process") from None
        return fd

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        capacity: int,
        fields: Mapping[str, Field],
        *,
        frame_key: str = "obs",
        frame_capacity: int | None = None,
        sync: bool = False,
        max_resident_bytes: int = 64 << 20,
    ) -> Lake:
        """Create an empty lake in directory ``path`` (made if missing, must hold no lake).

        ``capacity`` counts transitions. ``frame_capacity`` (default ``2 * capacity``, the worst
        case of every transition breaking the run) counts stored frames; the files are sparse,
        so only used rows take disk space. ``max_resident_bytes`` bounds how much of the mapped
        files one step of a gather may map before it is released (the RSS stays flat).
        """
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        if frame_key not in fields:
            raise ValueError(f"frame_key {frame_key!r} is not among the fields {sorted(fields)}")
        if next_key(frame_key) in fields:
            raise ValueError(f"{next_key(frame_key)!r} is derived from {frame_key!r}; drop it")
        for name in fields:
            if not name.isidentifier() or name in (FRAMES, FRAME_INDEX):
                raise ValueError(f"field name {name!r} must be an identifier, not a lake file")
        frame_capacity = 2 * capacity if frame_capacity is None else frame_capacity
        if frame_capacity < 2:
            raise ValueError(f"frame_capacity must be at least 2, got {frame_capacity}")
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        if (root / HEADER).exists():
            raise FileExistsError(f"{root} already holds a lake; use Lake.open")
        lock_fd = cls._lock(root)
        header = {
            "format": FORMAT,
            "version": VERSION,
            "capacity": int(capacity),
            "frame_capacity": int(frame_capacity),
            "frame_key": frame_key,
            "fields": {k: Field(tuple(f.shape), f.dtype).to_json() for k, f in fields.items()},
            "count": 0,
            "frames": 0,
        }
        for name in [FRAMES, FRAME_INDEX, *fields]:
            (root / f"{name}.memmap").unlink(missing_ok=True)  # leftovers of a failed create
        lake = cls(
            root,
            header,
            readonly=False,
            sync=sync,
            max_resident_bytes=max_resident_bytes,
            lock_fd=lock_fd,
        )
        lake._commit()
        logger.info("created lake %s: capacity %d, fields %s", root, capacity, sorted(fields))
        return lake

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        readonly: bool = False,
        sync: bool = False,
        max_resident_bytes: int = 64 << 20,
    ) -> Lake:
        """Reopen the lake in ``path`` with its committed transitions (to read or extend)."""
        root = Path(path)
        try:
            header = json.loads((root / HEADER).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no lake in {root} (missing {HEADER})") from None
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            raise LakeError(f"{root / HEADER} is not a version-{VERSION} lake header")
        lock_fd = None if readonly else cls._lock(root)
        return cls(
            root,
            header,
            readonly=readonly,
            sync=sync,
            max_resident_bytes=max_resident_bytes,
            lock_fd=lock_fd,
        )

    def __len__(self) -> int:
        return self._count

    @property
    def frames_used(self) -> int:
        """Frames stored so far (at least ``len(self)``, at most ``2 * len(self)``)."""
        return self._frames_used

    def _commit(self) -> None:
        if self.sync:
            for name in [FRAMES, FRAME_INDEX, *self._columns]:
                fd = os.open(self.path / f"{name}.memmap", os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        header = {
            "format": FORMAT,
            "version": VERSION,
            "capacity": self.capacity,
            "frame_capacity": self.frame_capacity,
            "frame_key": self.frame_key,
            "fields": {k: f.to_json() for k, f in self.fields.items()},
            "count": self._count,
            "frames": self._frames_used,
        }
        _write_json_atomic(self.path / HEADER, header, self.sync)

    def _check_writable(self) -> None:
        if self.readonly:
            raise LakeError(f"{self.path} was opened read-only")
        if self._lock_fd is None:
            raise LakeError(f"{self.path} is closed")

    def extend(self, batch: Mapping[str, torch.Tensor]) -> int:
        """Append a batch of consecutive transitions of one stream; return how many.

        Tensors may live on any device (the frame comparison runs there). The batch is
        committed whole or not at all.
        """
        self._check_writable()
        n = check_batch(batch, self.fields, self.frame_key)
        if n == 0:
            return 0
        obs = batch[self.frame_key]
        nxt = batch[next_key(self.frame_key)]
        # linked[t]: obs[t] is the frame stored just before it (the previous next obs).
        linked = torch.zeros(n, dtype=torch.bool, device=obs.device)
        if n > 1:
            linked[1:] = (nxt[:-1] == obs[1:]).flatten(1).all(1)
        if self._frames_used > 0:
            last = self._frames[self._frames_used - 1].to(obs.device)
            linked[0] = bool(torch.equal(obs[0], last))
        new_run = ~linked
        # Per transition: its next frame, plus its own frame when it starts a run.
        ends = torch.cumsum(1 + new_run.long(), 0)
        needed = int(ends[-1])
        if self._count + n > self.capacity or self._frames_used + needed > self.frame_capacity:
            raise LakeFullError(
                f"extend of {n} transitions ({needed} frames) does not fit: "
                f"{self._count}/{self.capacity} transitions, "
                f"{self._frames_used}/{self.frame_capacity} frames used"
            )
        chunk = torch.empty((needed, *obs.shape[1:]), dtype=obs.dtype, device=obs.device)
        chunk[ends - 1] = nxt
        chunk[(ends - 2)[new_run]] = obs[new_run]
        f0, c0 = self._frames_used, self._count
        self._frames[f0 : f0 + needed] = chunk.cpu()
        self._frame_index[c0 : c0 + n] = (f0 + ends - 2).cpu()
        for key, column in self._columns.items():
            column[c0 : c0 + n] = batch[key].cpu()
        self._frames_used += needed
        self._count += n
        self._commit()
        release(self._frames, max(0, f0 - 1), f0 + needed)
        release(self._frame_index, c0, c0 + n)
        for column in self._columns.values():
            release(column, c0, c0 + n)
        return n

    def get(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Transitions at ``indices`` (int64 CPU tensor, each in ``[0, len(self))``)."""
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self._count):
            raise IndexError(f"indices out of range for a lake of {self._count} transitions")
        frame = self.fields[self.frame_key]
        rows = self._frame_index.index_select(0, indices)
        pairs = torch.empty((len(rows), 2, *frame.shape), dtype=frame.dtype)
        for start in range(0, len(rows), self._slice):
            part = rows[start : start + self._slice]
            torch.index_select(self._pairs, 0, part, out=pairs[start : start + len(part)])
            release_rows(self._frames, part.tolist(), span=2)
        out = {self.frame_key: pairs[:, 0], next_key(self.frame_key): pairs[:, 1]}
        for key, column in self._columns.items():
            out[key] = column.index_select(0, indices)
            release(column, 0, self._count)
        release(self._frame_index, 0, self._count)
        return out

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """``batch_size`` transitions drawn uniformly, with replacement, from those stored."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if self._count == 0:
            raise LakeEmptyError(f"cannot sample from the empty lake {self.path}")
        return self.get(torch.randint(0, self._count, (batch_size,), generator=generator))

    def truncate(self, count: int) -> None:
        """Keep only the first ``count`` transitions (roll back to an earlier state)."""
        self._check_writable()
        if not 0 <= count <= self._count:
            raise ValueError(f"cannot truncate a lake of {self._count} to {count}")
        self._frames_used = int(self._frame_index[count - 1]) + 2 if count else 0
        self._count = count
        self._commit()

    def release(self) -> None:
        """Drop the mapped pages from this process's RSS (they stay in the page cache)."""
        release(self._frames, 0, self._frames_used)
        release(self._frame_index, 0, self._count)
        for column in self._columns.values():
            release(column, 0, self._count)

    def disk_bytes(self) -> int:
        """Bytes the lake's files occupy on disk (allocated blocks, not apparent size)."""
        return sum(p.stat().st_blocks * 512 for p in self.path.iterdir() if p.is_file())

    def close(self) -> None:
        """Release the write lock; the lake stays on disk as last committed."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Lake:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Lake({str(self.path)!r}, {self._count}/{self.capacity} transitions)"
