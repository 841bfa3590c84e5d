"""Task sources: where a run's tasks come from, each giving its tasks *and* their system prompt,
so the episode runner has no source-specific branch.

* ``tau2``: the official tau2 tasks (:mod:`~tau2.continual_learning.rollout.tasks.tau2_official`);
* ``skills``: compact tasks generated from the real databases and tools, scored by tau2's
  evaluators (:mod:`~tau2.continual_learning.rollout.tasks.skills`), also in API-migration
  variants (:mod:`~tau2.continual_learning.rollout.tasks.api_migration`).
"""

from __future__ import annotations

from typing import Protocol

from tau2.continual_learning.rollout.domain_task import (
    DOMAINS,
    SOLO_DOMAINS,
    VARIANT_DOMAINS,
    DomainTask,
    available_domains,
    base_domain,
    check_domain,
)
from tau2.continual_learning.rollout.tasks.skills import SkillTasks
from tau2.continual_learning.rollout.tasks.tau2_official import Tau2Tasks


class TaskSource(Protocol):
    """What a task source offers; register an instance in ``TASK_SOURCES``."""

    name: str
    domains: tuple[str, ...]
    max_tool_response_chars: int | None
    """Default cut of tool responses in what the model sees (``None``: shown whole)."""

    def load(self, domain: str, split: str, seed: int = 0) -> list[DomainTask]:
        """Tasks of ``domain`` for ``split`` (``seed`` matters for generated tasks)."""
        ...

    def get(self, domain: str, task_id: str, seed: int = 0) -> DomainTask:
        """One task by id; unknown ids raise ``ValueError`` listing the valid ones."""
        ...

    def system_prompt(self, task: DomainTask) -> str:
        """The agent's system prompt for ``task``."""
        ...


TASK_SOURCES: dict[str, TaskSource] = {
    source.name: source for source in (Tau2Tasks(), SkillTasks())
}


def get_task_source(name: str) -> TaskSource:
    """The source registered as ``name``; unknown names list the valid ones."""
    if name not in TASK_SOURCES:
        raise ValueError(f"Unknown task_source {name!r}; valid: {', '.join(TASK_SOURCES)}")
    return TASK_SOURCES[name]


def _source_of(domain: str, task_source: str) -> TaskSource:
    """The source ``task_source``, checked to have tasks of ``domain`` (API-migration variants
    have skill tasks only)."""
    check_domain(domain)
    source = get_task_source(task_source)
    if domain not in source.domains:
        raise ValueError(
            f"task_source {task_source!r} has no domain {domain!r}; its domains: "
            f"{', '.join(source.domains)}"
        )
    return source


def load_tasks(
    domain: str, split: str = "train", task_source: str = "tau2", seed: int = 0
) -> list[DomainTask]:
    """Tasks of ``domain`` for ``split`` from a task source (``"tau2"`` or ``"skills"``).

    Raises ``ValueError`` naming the valid domains, splits or sources.
    """
    return _source_of(domain, task_source).load(domain, split, seed)


def get_task(key: str, task_source: str = "tau2", seed: int = 0) -> DomainTask:
    """The task named ``"<domain>/<task id>"``; unknown ids raise listing the valid ones."""
    domain, _, task_id = key.partition("/")
    return _source_of(domain, task_source).get(domain, task_id, seed)


def system_prompt(task: DomainTask) -> str:
    """The agent's system prompt for ``task``, from the task's own source."""
    return get_task_source(task.source).system_prompt(task)


__all__ = [
    "DOMAINS",
    "SOLO_DOMAINS",
    "TASK_SOURCES",
    "VARIANT_DOMAINS",
    "DomainTask",
    "TaskSource",
    "available_domains",
    "base_domain",
    "check_domain",
    "get_task",
    "get_task_source",
    "load_tasks",
    "system_prompt",
]
