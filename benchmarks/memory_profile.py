"""Memory profile of a short default-config run: resident memory at each phase of the job.

The default job's phases, on the default config's first domain (``--domains`` for more),
shortened by the overrides in :data:`SHORT` (``--set`` changes any field): the baseline
evaluation, the warm start (its demonstrations, the guard's scoring before and after, the
supervised steps), the score after it, the GRPO steps (their rollouts inside) and the
evaluation after the domain. For every phase one JSON line: ``rss_start_mb``, ``peak_mb`` (the
highest resident memory while it ran, from the kernel's high-water mark, reset at every phase
boundary), ``rss_end_mb``, and ``rss_trimmed_mb``: resident memory after ``gc.collect()`` and
glibc's ``malloc_trim(0)`` at its end, so ``rss_end_mb - rss_trimmed_mb`` is memory freed but
still held by the allocator. Nested phases (the warm start's parts, the GRPO step's rollout)
count in their parent's peak too. A last line: the run's peak (the kernel's ``ru_maxrss``
cannot be used: resetting the high-water mark resets it too) and the model's size.

    python benchmarks/memory_profile.py
    python benchmarks/memory_profile.py --set max_steps_per_domain=2 --set bf16=false
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from _cli import add_override_argument

import tau2.continual_learning  # noqa: F401  (import hygiene first)
from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.memory import (
    peak_resident_mb,
    release_memory,
    reset_peak,
    resident_mb,
)

SHORT: dict[str, Any] = {"eval_tasks_per_domain": 8, "max_steps_per_domain": 1}
"""The overrides that make the run short (the rest is the default config)."""


class Profile:
    """Phases with their resident memory; nested phases count in their parents' peaks."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.open: list[dict[str, Any]] = []
        self.lines: list[dict[str, Any]] = []

    def _boundary(self) -> float:
        peak = peak_resident_mb()
        for phase in self.open:
            phase["peak_mb"] = max(phase["peak_mb"], peak)
        reset_peak()
        return resident_mb()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        rss = self._boundary()
        record = {"phase": name, "depth": len(self.open), "rss_start_mb": rss, "peak_mb": rss}
        self.open.append(record)
        start = time.perf_counter()
        try:
            yield
        finally:
            record["seconds"] = time.perf_counter() - start
            record["rss_end_mb"] = self._boundary()
            self.open.pop()
            release_memory()
            record["rss_trimmed_mb"] = self._boundary()
            line = {k: round(v, 1) if isinstance(v, float) else v for k, v in record.items()}
            print(json.dumps(line), file=self.stream, flush=True)
            self.lines.append(line)

    def wrap(self, owner: Any, name: str, label: str | Callable[..., str]) -> None:
        """Profile every call of ``owner.name`` as a phase (``label``: its name, or a function
        of the call's arguments giving it)."""
        method = getattr(owner, name)

        def profiled(*args: Any, **kwargs: Any) -> Any:
            title = label if isinstance(label, str) else label(*args, **kwargs)
            with self.phase(title):
                return method(*args, **kwargs)

        setattr(owner, name, profiled)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--domains", nargs="+", default=None, help="default: the first domain")
    add_override_argument(parser, ("output_dir", "domains"), " (--domains)")
    args = parser.parse_args(argv)
    profile = Profile(sys.stdout)
    with tempfile.TemporaryDirectory() as out:
        fields = {**SHORT, **dict(args.overrides)}
        domains = args.domains or GRPOConfig(output_dir=out).domains[:1]
        config = GRPOConfig(**fields, domains=domains, output_dir=out, report_to=[])
        with profile.phase("load model"):
            trainer = GRPOTrainer(config)
        evaluations = iter(["baseline evaluation", *(f"evaluation after {d}" for d in domains)])
        profile.wrap(trainer, "evaluate_all", lambda *a, **k: next(evaluations))
        profile.wrap(trainer, "_warm_start", lambda domain: f"warm start {domain}")
        profile.wrap(trainer.warm_start, "demonstrations", "demonstrations")
        profile.wrap(trainer.evaluator, "tasks", "guard scoring")
        profile.wrap(trainer.evaluator, "domain", lambda domain, *a, **k: f"score {domain}")
        profile.wrap(trainer.warm_start, "run", "supervised steps")
        profile.wrap(trainer, "_train_domain", lambda domain, resume: f"GRPO steps {domain}")
        profile.wrap(trainer, "rollout", "rollout")
        with contextlib.redirect_stdout(sys.stderr), profile.phase("run"):
            trainer.train()
    model = trainer.model
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    last = {
        "run_peak_mb": max(line["peak_mb"] for line in profile.lines),
        "model_mb": round(size / 2**20, 1),
        "bf16": bool(config.bf16),
    }
    print(json.dumps(last), flush=True)
    return [*profile.lines, last]


if __name__ == "__main__":
    main()
