"""Lake versus a peer memory-mapped replay store, on (3, 84, 84) uint8 Atari-sized transitions.

Each store runs in its own subprocess (so its peak RSS is its own): it is filled with
``--transitions`` transitions in chunks of ``--chunk`` (each chunk from another stream, as
when K ponds pour in turn; episodes of ``--episode-length``), then sampled uniformly in
batches of 32 and 256 for ``--sample-seconds`` each. The peer is TorchRL's
``LazyMemmapStorage`` behind a ``TensorDictReplayBuffer`` (observation and next observation
both stored) when torchrl imports, else a plain ``numpy.memmap`` ring that copies both.

One JSON line per store: ``store``, ``transitions``, ``bytes_per_transition`` (allocated disk
blocks), ``write_per_s`` (transitions), ``sample_batches_per_s`` (per batch size),
``peak_rss_mb``, ``rss_mb`` (current RSS as the store grows), and the projection to 1M
transitions (``projected_1m_disk_gb``, ``projected_1m_rss_mb`` from a linear fit of the RSS
as it grew). The lake's line also has ``fill_big_pond_per_s``.

    python benchmarks/lake_pond.py                  # 200k transitions (~4 GB for the lake)
    python benchmarks/lake_pond.py --quick          # 20k, a smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHAPE = (3, 84, 84)
BATCH_SIZES = (32, 256)


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def make_chunks(n: int, chunk: int, episode_length: int):
    """Yield ``(obs, next_obs, action, reward, terminated)`` chunks of one stream each."""
    import torch

    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (chunk + 1, *SHAPE), dtype=torch.uint8, generator=generator)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        ids = torch.arange(start, start + size)
        terminated = ids % episode_length == episode_length - 1
        nxt = frames[1 : size + 1].clone()
        nxt[terminated] = 0  # a terminal frame of its own
        yield frames[:size], nxt, ids % 6, torch.ones(size), terminated


class LakeStore:
    name = "lake"

    def __init__(self, path: Path, capacity: int) -> None:
        import torch

        from tau2.continual_learning.tiered import Field, Lake

        self.torch = torch
        fields = {
            "obs": Field(SHAPE, torch.uint8),
            "action": Field((), torch.int64),
            "reward": Field((), torch.float32),
            "terminated": Field((), torch.bool),
        }
        self.lake = Lake.create(path, capacity, fields)

    def extend(self, obs, nxt, action, reward, terminated) -> None:
        self.lake.extend(
            {
                "obs": obs,
                "next_obs": nxt,
                "action": action,
                "reward": reward,
                "terminated": terminated,
            }
        )

    def sample(self, batch_size: int, generator) -> Any:
        return self.lake.sample(batch_size, generator)

    def disk_bytes(self) -> int:
        return self.lake.disk_bytes()

    def extra(self) -> dict[str, Any]:
        from tau2.continual_learning.tiered import Pond

        pond = Pond(10_000, self.lake.fields)
        start = time.perf_counter()
        pond.fill_from(self.lake, generator=self.torch.Generator().manual_seed(1))
        return {
            "fill_big_pond_per_s": round(10_000 / (time.perf_counter() - start)),
            "pond_device": str(pond.device),
        }


class TorchRLStore:
    name = "torchrl_lazy_memmap"

    def __init__(self, path: Path, capacity: int) -> None:
        import torch
        from tensordict import TensorDict
        from torchrl.data import LazyMemmapStorage, TensorDictReplayBuffer

        self.torch, self.TensorDict, self.path = torch, TensorDict, path
        self.rb = TensorDictReplayBuffer(
            storage=LazyMemmapStorage(capacity, scratch_dir=str(path)), batch_size=32
        )

    def extend(self, obs, nxt, action, reward, terminated) -> None:
        data = self.TensorDict(
            {
                "obs": obs,
                "action": action,
                "next": {"obs": nxt, "reward": reward, "terminated": terminated},
            },
            batch_size=[obs.shape[0]],
        )
        self.rb.extend(data)

    def sample(self, batch_size: int, generator) -> Any:
        return self.rb.sample(batch_size)

    def disk_bytes(self) -> int:
        return sum(p.stat().st_blocks * 512 for p in self.path.rglob("*") if p.is_file())

    def extra(self) -> dict[str, Any]:
        return {}


class NumpyRingStore:
    name = "numpy_memmap_ring"

    def __init__(self, path: Path, capacity: int) -> None:
        import numpy as np

        path.mkdir(parents=True, exist_ok=True)
        self.np, self.path, self.capacity = np, path, capacity

        def column(name: str, shape: tuple[int, ...], dtype: Any):
            return np.memmap(path / name, dtype=dtype, mode="w+", shape=(capacity, *shape))

        self.obs = column("obs", SHAPE, np.uint8)
        self.next_obs = column("next_obs", SHAPE, np.uint8)
        self.action = column("action", (), np.int64)
        self.reward = column("reward", (), np.float32)
        self.terminated = column("terminated", (), np.bool_)
        self.pos = self.size = 0

    def extend(self, obs, nxt, action, reward, terminated) -> None:
        n = obs.shape[0]
        rows = (self.pos + self.np.arange(n)) % self.capacity
        for column, value in (
            (self.obs, obs),
            (self.next_obs, nxt),
            (self.action, action),
            (self.reward, reward),
            (self.terminated, terminated),
        ):
            column[rows] = value.numpy()
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.capacity, self.size + n)

    def sample(self, batch_size: int, generator) -> Any:
        rows = self.np.sort(generator.integers(0, self.size, batch_size))
        return self.obs[rows], self.next_obs[rows], self.action[rows], self.reward[rows]

    def disk_bytes(self) -> int:
        return sum(p.stat().st_blocks * 512 for p in self.path.iterdir())

    def extra(self) -> dict[str, Any]:
        return {}


def peer_store() -> type:
    try:
        import torchrl.data  # noqa: F401
    except ImportError:
        return NumpyRingStore
    return TorchRLStore


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Fill and sample one store; return its figures."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    cls = LakeStore if args.worker == "lake" else peer_store()
    store = cls(Path(args.dir) / args.worker, args.transitions)
    milestones = {args.transitions * k // 4 for k in range(1, 5)}
    rss, written, write_s = {}, 0, 0.0
    for chunk in make_chunks(args.transitions, args.chunk, args.episode_length):
        start = time.perf_counter()
        store.extend(*chunk)
        write_s += time.perf_counter() - start
        written += chunk[0].shape[0]
        if written in milestones:
            rss[written] = round(current_rss_mb(), 1)
    torch.manual_seed(0)  # TorchRL samples with the global generator
    generator = (
        np.random.default_rng(0) if cls is NumpyRingStore else torch.Generator().manual_seed(0)
    )
    rates = {}
    for batch_size in BATCH_SIZES:
        batches, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.sample_seconds:
            store.sample(batch_size, generator)
            batches += 1
        rates[str(batch_size)] = round(batches / (time.perf_counter() - start), 1)
    rss["after_sampling"] = round(current_rss_mb(), 1)
    bytes_per = store.disk_bytes() / args.transitions
    grown = [(n, mb) for n, mb in rss.items() if isinstance(n, int)]
    (n0, r0), (n1, r1) = grown[0], grown[-1]
    slope = (r1 - r0) / (n1 - n0) if n1 > n0 else 0.0
    return {
        "store": cls.name,
        "transitions": args.transitions,
        "bytes_per_transition": round(bytes_per),
        "write_per_s": round(written / write_s),
        "sample_batches_per_s": rates,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_mb": {str(k): v for k, v in rss.items()},
        "projected_1m_disk_gb": round(bytes_per * 1e6 / 1e9, 1),
        "projected_1m_rss_mb": round(max(r1 + slope * (1e6 - n1), r1), 1),
        **store.extra(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--transitions", type=int, default=200_000)
    p.add_argument("--chunk", type=int, default=1_000)
    p.add_argument("--episode-length", type=int, default=1_000)
    p.add_argument("--sample-seconds", type=float, default=10.0)
    p.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    p.add_argument("--quick", action="store_true", help="20k transitions, 2 s per batch size")
    p.add_argument("--stores", nargs="+", default=["lake", "peer"], choices=["lake", "peer"])
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.transitions, args.sample_seconds = 20_000, 2.0
    if args.worker is not None:
        print(json.dumps(worker(args)), flush=True)
        return
    scratch = Path(tempfile.mkdtemp(prefix="lake_pond_", dir=args.dir))
    try:
        for store in args.stores:
            cmd = [sys.executable, __file__, "--worker", store, "--dir", str(scratch)]
            cmd += ["--transitions", str(args.transitions), "--chunk", str(args.chunk)]
            cmd += ["--episode-length", str(args.episode_length)]
            cmd += ["--sample-seconds", str(args.sample_seconds)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            print(out.strip().splitlines()[-1], flush=True)
            shutil.rmtree(scratch / store, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
