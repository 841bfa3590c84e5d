"""``TrajectoryBuffer``: per-domain storage of finished episodes for replay.

Each domain has its own bounded store (``capacity`` records). *Insertion* (which record a full
store evicts) is a policy from :mod:`tau2.continual_learning.insertion_policies` (FIFO, reservoir,
balanced reservoir, loss-aware, ...), with the task key as bucket and ``1 - reward`` as the
per-trajectory "loss" score (failed episodes count as hard). *Sampling* is a separate choice:

* ``random`` - uniform, without replacement;
* ``high_reward`` - weighted by ``reward + 0.05``: successful episodes are preferred but
  failures can still be drawn;
* ``recent`` - weighted linearly by insertion order (the newest record has the largest weight);
* ``balanced`` - equal shares across the requested domains and, inside a domain, across tasks.

Adding is O(1) amortised per record; sampling is linear in the stored records of the requested
domains (never in how many were ever added); memory is bounded by ``capacity`` per domain.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tau2.continual_learning.insertion_policies import InsertionPolicy, make_insertion_policy

SAMPLING_STRATEGIES = ("random", "high_reward", "recent", "balanced")


@dataclass
class TrajectoryRecord:
    """One stored episode: enough to replay its task, and its tokens for off-policy methods."""

    task: Any
    domain: str
    reward: float
    step: int = 0
    order: int = 0
    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


class TrajectoryBuffer:
    """Per-domain bounded trajectory storage with pluggable insertion and sampling."""

    def __init__(
        self, capacity: int = 1000, insertion_policy: str = "reservoir", seed: int = 0
    ) -> None:
        if capacity < 1:
            raise ValueError(f"TrajectoryBuffer capacity must be >= 1, got {capacity!r}")
        make_insertion_policy(insertion_policy, 1)  # validates the name early
        self.capacity = capacity
        self.insertion_policy = insertion_policy
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._records: dict[str, list[TrajectoryRecord]] = {}
        self._policies: dict[str, InsertionPolicy] = {}
        self._added = 0

    # -- adding ------------------------------------------------------------------------------
    def add(self, record: TrajectoryRecord) -> bool:
        """Offer a record to its domain's store; returns whether it was kept."""
        domain = record.domain
        if domain not in self._policies:
            seed = self.seed + len(self._policies) + 1
            self._policies[domain] = make_insertion_policy(
                self.insertion_policy, self.capacity, seed
            )
            self._records[domain] = []
        record.order = self._added
        self._added += 1
        key = getattr(record.task, "key", repr(record.task))
        slot = self._policies[domain].add(key, 1.0 - float(record.reward))
        if slot is None:
            return False
        records = self._records[domain]
        if slot == len(records):
            records.append(record)
        else:
            records[slot] = record
        return True

    def add_episode(self, episode: Any, step: int = 0) -> bool:
        """Store a rollout ``Episode`` (from :mod:`tau2.continual_learning.rollout`)."""
        return self.add(
            TrajectoryRecord(
                task=episode.task,
                domain=episode.task.domain,
                reward=float(episode.reward),
                step=step,
                prompt_ids=list(episode.prompt_ids),
                completion_ids=list(episode.completion_ids),
                env_mask=list(episode.env_mask),
                logprobs=list(episode.logprobs),
            )
        )

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(len(r) for r in self._records.values())

    def size(self, domain: str) -> int:
        """Records stored for ``domain`` (0 for a domain never seen)."""
        return len(self._records.get(domain, ()))

    def sizes(self) -> dict[str, int]:
        """Records per domain, in the order domains were first added."""
        return {d: len(r) for d, r in self._records.items()}

    @property
    def domains(self) -> list[str]:
        return list(self._records)

    def records(self, domain: str) -> list[TrajectoryRecord]:
        """A copy of the list of ``domain``'s records."""
        return list(self._records.get(domain, ()))

    def sample(
        self, domain: str | Sequence[str], n: int, strategy: str = "random"
    ) -> list[TrajectoryRecord]:
        """Up to ``n`` distinct records from one domain or several, drawn by ``strategy``."""
        if strategy not in SAMPLING_STRATEGIES:
            raise ValueError(
                f"Unknown replay strategy {strategy!r}; valid: {', '.join(SAMPLING_STRATEGIES)}"
            )
        if n < 0:
            raise ValueError(f"sample size must be >= 0, got {n}")
        domains = [domain] if isinstance(domain, str) else list(domain)
        pool = [r for d in domains for r in self._records.get(d, ())]
        n = min(n, len(pool))
        if n == 0:
            return []
        if strategy == "balanced":
            return self._sample_balanced(pool, n)
        weights = self._weights(pool, strategy)
        picks = self.rng.choice(len(pool), size=n, replace=False, p=weights)
        return [pool[i] for i in picks]

    def _weights(self, pool: list[TrajectoryRecord], strategy: str) -> np.ndarray:
        if strategy == "high_reward":
            w = np.array([max(r.reward, 0.0) + 0.05 for r in pool])
        elif strategy == "recent":
            ranks = np.argsort(np.argsort([r.order for r in pool]))
            w = ranks.astype(np.float64) + 1.0
        else:
            w = np.ones(len(pool))
        return w / w.sum()

    def _sample_balanced(self, pool: list[TrajectoryRecord], n: int) -> list[TrajectoryRecord]:
        """Round-robin over domains, then over tasks inside a domain, in random order."""
        groups: dict[tuple[str, str], list[TrajectoryRecord]] = {}
        for r in pool:
            groups.setdefault((r.domain, getattr(r.task, "key", repr(r.task))), []).append(r)
        by_domain: dict[str, list[list[TrajectoryRecord]]] = {}
        for (d, _), recs in groups.items():
            self.rng.shuffle(recs)
            by_domain.setdefault(d, []).append(recs)
        for task_lists in by_domain.values():
            self.rng.shuffle(task_lists)
        chosen: list[TrajectoryRecord] = []
        cursor = {d: 0 for d in by_domain}
        domain_order = list(by_domain)
        self.rng.shuffle(domain_order)
        while len(chosen) < n:
            for d in domain_order:
                task_lists = [t for t in by_domain[d] if t]
                if not task_lists or len(chosen) == n:
                    continue
                recs = task_lists[cursor[d] % len(task_lists)]
                cursor[d] += 1
                chosen.append(recs.pop())
        return chosen

    def statistics(self) -> dict[str, Any]:
        """Sizes and mean reward per domain."""
        return {
            "sizes": self.sizes(),
            "mean_reward": {
                d: float(np.mean([r.reward for r in recs])) if recs else 0.0
                for d, recs in self._records.items()
            },
            "total_added": self._added,
        }

    def to_dataset(self) -> Any:
        """The stored episodes as a ``datasets.Dataset``, one row per record (domains in the
        order they were first added, each in its store's order): ``task_key``, ``domain``,
        ``reward``, ``step`` (the global step that sampled it), ``order`` (its place among all
        records ever offered), ``prompt_ids``, ``completion_ids``, ``env_mask`` (1 where the
        model wrote the token) and ``logprobs`` (the sampler's, per completion token; empty
        where none were kept). ``save_to_disk`` or ``push_to_hub`` it to keep or share a run's
        experience; the task objects themselves stay out (their keys find them again:
        ``load_tasks``)."""
        from datasets import Dataset, Features, List, Value

        features = Features(
            {
                "task_key": Value("string"),
                "domain": Value("string"),
                "reward": Value("float64"),
                "step": Value("int64"),
                "order": Value("int64"),
                "prompt_ids": List(Value("int32")),
                "completion_ids": List(Value("int32")),
                "env_mask": List(Value("int8")),
                "logprobs": List(Value("float64")),
            }
        )
        records = [r for stored in self._records.values() for r in stored]
        columns: dict[str, list[Any]] = {
            "task_key": [getattr(r.task, "key", repr(r.task)) for r in records],
            "domain": [r.domain for r in records],
            "reward": [float(r.reward) for r in records],
        }
        for name in ("step", "order", "prompt_ids", "completion_ids", "env_mask", "logprobs"):
            columns[name] = [getattr(r, name) for r in records]
        return Dataset.from_dict(columns, features=features)

    # -- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "insertion_policy": self.insertion_policy,
            "seed": self.seed,
            "rng": self.rng.bit_generator.state,
            "records": {d: list(r) for d, r in self._records.items()},
            "policies": {d: p.state_dict() for d, p in self._policies.items()},
            "added": self._added,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity = state["capacity"]
        self.insertion_policy = state["insertion_policy"]
        self.seed = state["seed"]
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self._records = {d: list(r) for d, r in state["records"].items()}
        self._policies = {}
        for d, policy_state in state["policies"].items():
            policy = make_insertion_policy(self.insertion_policy, self.capacity)
            policy.load_state_dict(policy_state)
            self._policies[d] = policy
        self._added = state["added"]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the buffer to ``path`` atomically (temporary file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(self.state_dict(), fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrajectoryBuffer:
        """Read a buffer written by :meth:`save`."""
        with open(path, "rb") as fh:
            state = pickle.load(fh)
        buffer = cls(state["capacity"], state["insertion_policy"], state["seed"])
        buffer.load_state_dict(state)
        return buffer
