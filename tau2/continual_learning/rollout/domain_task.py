"""``DomainTask``: one task of one domain as the episode runner sees it, and the domain names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tau2.data_model.tasks import Task

DOMAINS: tuple[str, ...] = ("airline", "retail", "telecom", "mock")
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
