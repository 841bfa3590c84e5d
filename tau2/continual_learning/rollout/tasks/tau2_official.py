"""The official tau2 tasks as a task source: tau2's own train/test splits, and the agent's
system prompt of tau2's ``LLMAgent`` kind (instructions, the domain policy, the tools)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from tau2.continual_learning.rollout.domain_task import (
    DOMAINS,
    SOLO_DOMAINS,
    DomainTask,
    check_domain,
)
from tau2.continual_learning.rollout.environments import (
    agent_tool_schemas,
    environment_module,
    policy_text,
)
from tau2.continual_learning.rollout.prompt import agent_system_prompt

if TYPE_CHECKING:
    from tau2.data_model.tasks import Task


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
    # Tasks whose empty trajectory already scores 1.0 (found by scoring empty episodes;
    # scripts/check_gold_replay.py --empty re-checks them).
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
    splits = task_splits(check_domain(domain, DOMAINS))
    if split not in splits:
        raise ValueError(
            f"Unknown split {split!r} for domain {domain!r}; valid splits: {', '.join(splits)}"
        )
    tasks = _all_tasks(domain)
    return [make_domain_task(domain, tasks[task_id]) for task_id in splits[split]]


class Tau2Tasks:
    """The ``tau2`` task source: official tasks of every domain, long policy prompts, a user
    simulator for tasks without a ticket."""

    name = "tau2"
    domains: tuple[str, ...] = DOMAINS
    max_tool_response_chars: int | None = None
    """Official tasks need whole tool responses (shown whole by default)."""

    def load(self, domain: str, split: str, seed: int = 0) -> list[DomainTask]:
        """Tasks of tau2's ``split`` (``seed`` is unused: the splits are fixed)."""
        return load_tau2_tasks(domain, split)

    def get(self, domain: str, task_id: str, seed: int = 0) -> DomainTask:
        tasks = _all_tasks(check_domain(domain, DOMAINS))
        if task_id not in tasks:
            raise ValueError(
                f"Unknown task id {task_id!r} for domain {domain!r}; valid ids: {', '.join(tasks)}"
            )
        return make_domain_task(domain, tasks[task_id])

    def system_prompt(self, task: DomainTask) -> str:
        return _system_prompt(task.domain, task.solo, task.env_solo_mode, task.tool_names)


@functools.cache
def _system_prompt(
    domain: str, solo: bool, env_solo_mode: bool, tool_names: tuple[str, ...] | None
) -> str:
    schemas = agent_tool_schemas(domain, solo, env_solo_mode, tool_names)
    return agent_system_prompt(policy_text(domain, env_solo_mode), schemas, solo=solo)
