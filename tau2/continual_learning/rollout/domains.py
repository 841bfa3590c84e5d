"""The tau2 domains as the rollout engine sees them: environments, tools, policy and tasks.

Everything heavy (task files, tool schemas) is loaded once per process and cached; every
episode still gets a fresh environment (:mod:`~tau2.continual_learning.rollout.shared_database`
lets it share a parsed database until its first write), because tools mutate their database
in place.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tau2.continual_learning import hygiene

hygiene.configure_tau2_environment()

if TYPE_CHECKING:
    from tau2.data_model.tasks import Task
    from tau2.environment.environment import Environment

DOMAINS: tuple[str, ...] = ("airline", "retail", "telecom", "mock")
SKILL_DOMAINS: tuple[str, ...] = ("airline", "retail", "telecom")
TASK_SOURCES: tuple[str, ...] = ("tau2", "skills")
SOLO_DOMAINS: frozenset[str] = frozenset({"telecom", "mock"})
"""Domains whose tau2 tasks carry a ``ticket`` and can run with no user simulator."""


def available_domains() -> list[str]:
    """Names of the tau2 domains the rollout engine supports."""
    return list(DOMAINS)


def check_domain(domain: str) -> str:
    """Return ``domain`` or raise ``ValueError`` listing the valid ones."""
    if domain not in DOMAINS:
        raise ValueError(f"Unknown domain {domain!r}; valid domains: {', '.join(DOMAINS)}")
    return domain


@dataclass(frozen=True)
class DomainTask:
    """One task of one domain, as handed to :class:`EpisodeRunner`.

    ``key`` is ``"<domain>/<task id>"`` (skill tasks: ``"<domain>/skill-..."``); ``trivial``
    flags tasks that score 1.0 with an empty trajectory (see ``docs/rollout.md``).
    """

    domain: str
    task: Task = field(compare=False, repr=False)
    source: str = "tau2"
    trivial: bool = False
    solo: bool = False
    """True when the task runs with no user simulator (ticket tasks and skill tasks)."""
    tool_names: tuple[str, ...] | None = None
    """Tools shown to the agent; ``None`` = every agent tool of the domain."""

    @property
    def key(self) -> str:
        return f"{self.domain}/{self.task.id}"

    @property
    def task_id(self) -> str:
        return self.task.id

    @property
    def env_solo_mode(self) -> bool:
        """Build the environment in tau2's solo mode (agent also holds the user's tools)?
        Only official ticket tasks; skill tasks run a normal environment with no user."""
        return self.solo and self.source == "tau2"


def environment_module(domain: str) -> Any:
    return importlib.import_module(f"tau2.domains.{check_domain(domain)}.environment")


def environment_constructor(domain: str) -> Callable[..., Environment]:
    """``get_environment`` of the domain: ``ctor(solo_mode=...)`` builds a fresh environment."""
    return environment_module(domain).get_environment


@functools.cache
def _schemas(domain: str, solo_mode: bool) -> tuple[dict[str, Any], ...]:
    env = environment_constructor(domain)(solo_mode=solo_mode)
    tools = list(env.get_tools())
    if solo_mode and env.user_tools is not None:
        tools += list(env.get_user_tools())
    return tuple(tool.openai_schema["function"] for tool in tools)


def tool_schemas(domain: str, *, solo_mode: bool = False) -> list[dict[str, Any]]:
    """OpenAI function specs (``{name, description, parameters}``) of the agent's tools.

    In solo mode (telecom, mock) the user's tools are included, as tau2's solo agent does.
    Cached per process (``get_tools`` rebuilds pydantic models on each call).
    """
    return list(_schemas(domain, solo_mode))


@functools.cache
def policy_text(domain: str, solo_mode: bool = False) -> str:
    """The domain policy the agent must follow (the solo variant where tau2 has one)."""
    return environment_constructor(domain)(solo_mode=solo_mode).get_policy()


@functools.cache
def _all_tasks(domain: str) -> dict[str, Task]:
    tasks = environment_module(domain).get_tasks(None)
    return {task.id: task for task in tasks}


@functools.cache
def task_splits(domain: str) -> dict[str, tuple[str, ...]]:
    """Split name -> task ids, as registered by tau2 (mock has only ``base``)."""
    splits = environment_module(domain).get_tasks_split() or {}
    return {name: tuple(ids) for name, ids in splits.items()}


TRIVIAL_TASK_IDS: dict[str, frozenset[str]] = {
    # Tasks whose empty trajectory already scores 1.0 (measured in TAU2_GUIDE.md section 3 and
    # re-checked by scripts/check_gold_replay.py --empty).
    "airline": frozenset(
        str(i) for i in (0, 1, 4, 5, 10, 28, 34, 36, 41, 43, 46, 47, 49, 6, 13, 26, 31, 45, 48)
    ),
    "retail": frozenset(str(i) for i in (10, 25, 50, 57, 105, 12, 65)),
}


def make_domain_task(domain: str, task: Task) -> DomainTask:
    """Wrap an official tau2 task (solo when the domain supports tickets and it has one)."""
    solo = domain in SOLO_DOMAINS and task.ticket is not None
    trivial = task.id in TRIVIAL_TASK_IDS.get(domain, frozenset())
    return DomainTask(domain=domain, task=task, source="tau2", trivial=trivial, solo=solo)


def load_tau2_tasks(domain: str, split: str) -> list[DomainTask]:
    splits = task_splits(check_domain(domain))
    if split not in splits:
        raise ValueError(
            f"Unknown split {split!r} for domain {domain!r}; valid splits: {', '.join(splits)}"
        )
    tasks = _all_tasks(domain)
    return [make_domain_task(domain, tasks[task_id]) for task_id in splits[split]]


def load_tasks(
    domain: str, split: str = "train", task_source: str = "tau2", seed: int = 0
) -> list[DomainTask]:
    """Tasks of ``domain`` for ``split`` from ``task_source`` (``"tau2"`` or ``"skills"``).

    ``seed`` only matters for skill tasks (which are generated). Raises ``ValueError`` naming
    the valid domains, splits or sources.
    """
    check_domain(domain)
    if task_source == "tau2":
        return load_tau2_tasks(domain, split)
    if task_source == "skills":
        from tau2.continual_learning.rollout.skills import load_skill_tasks

        return load_skill_tasks(domain, split, seed=seed)
    raise ValueError(f"Unknown task_source {task_source!r}; valid: {', '.join(TASK_SOURCES)}")


def get_task(key: str, task_source: str = "tau2", seed: int = 0) -> DomainTask:
    """The task named ``"<domain>/<task id>"``; unknown ids raise listing the valid ones."""
    domain, _, task_id = key.partition("/")
    check_domain(domain)
    if task_source == "tau2":
        tasks = _all_tasks(domain)
        if task_id not in tasks:
            raise ValueError(
                f"Unknown task id {task_id!r} for domain {domain!r}; valid ids: {', '.join(tasks)}"
            )
        return make_domain_task(domain, tasks[task_id])
    candidates = {
        t.task_id: t
        for split in ("train", "test")
        for t in load_tasks(domain, split, task_source, seed)
    }
    if task_id not in candidates:
        raise ValueError(
            f"Unknown task id {task_id!r} for {task_source} tasks of {domain!r}; valid ids: "
            f"{', '.join(candidates)}"
        )
    return candidates[task_id]
