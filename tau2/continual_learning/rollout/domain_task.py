"""``DomainTask``: one task of one domain as the episode runner sees it, and the domain names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tau2.data_model.tasks import Task

DOMAINS: tuple[str, ...] = ("airline", "retail", "telecom", "mock")
"""The tau2 domains: each has its own environment, database, tools and evaluators."""
SOLO_DOMAINS: frozenset[str] = frozenset({"telecom", "mock"})
"""Domains whose tau2 tasks carry a ``ticket`` and can run with no user simulator."""
VARIANT_DOMAINS: dict[str, str] = {
    "airline_v2": "airline",
    "retail_v2": "retail",
    "telecom_v2": "telecom",
}
"""API-migration variants (skill tasks only) and the tau2 domain each runs on: same database,
environment and evaluators, tools renamed and re-shaped (``rollout/tasks/api_migration.py``)."""


def available_domains() -> list[str]:
    """Names of the domains the episode runner supports: tau2's, then the API-migration
    variants."""
    return [*DOMAINS, *VARIANT_DOMAINS]


def check_domain(domain: str, valid: Sequence[str] | None = None) -> str:
    """Return ``domain`` or raise ``ValueError`` listing the valid ones (``valid``, default
    every domain)."""
    valid = available_domains() if valid is None else valid
    if domain not in valid:
        raise ValueError(f"Unknown domain {domain!r}; valid domains: {', '.join(valid)}")
    return domain


def base_domain(domain: str) -> str:
    """The tau2 domain whose environment, database, tools and evaluators ``domain`` uses
    (itself, or the domain an API-migration variant runs on)."""
    return VARIANT_DOMAINS.get(check_domain(domain), domain)


class ToolAPI(Protocol):
    """A tool API other than tau2's, as the agent of a task sees it: calls are translated to
    tau2's tools at the tool-call boundary of the episode."""

    def to_environment(self, name: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """tau2's call (tool name, arguments) for a call the agent wrote; ``ValueError``,
        whose message the agent is shown, when the call is malformed."""
        ...

    def to_agent(self, name: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The agent's call for a tau2 call (gold demonstrations)."""
        ...


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
    """tau2 tools shown to the agent (with ``tool_api``'s arguments when it has one);
    ``None`` = every agent tool of the domain."""
    tool_api: ToolAPI | None = field(default=None, compare=False, repr=False)
    """The API the agent calls when it is not tau2's (API-migration variants); ``None`` = the
    tau2 tools themselves."""
    tool_arguments: bool = True
    """Skill prompts list each tool's arguments; ``False``: names and descriptions only, so the
    arguments are learned (``GRPOConfig.tool_arguments_in_prompt``)."""

    @property
    def key(self) -> str:
        return f"{self.domain}/{self.task.id}"

    @property
    def task_id(self) -> str:
        return self.task.id

    @property
    def environment_domain(self) -> str:
        """The tau2 domain of the environment, database, tool schemas and evaluators."""
        return base_domain(self.domain)

    def environment_call(self, name: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """tau2's call for a call the agent wrote (translated by ``tool_api``); ``ValueError``
        with the agent's error message when the call is malformed."""
        if self.tool_api is None:
            return name, arguments
        return self.tool_api.to_environment(name, arguments)

    def agent_call(self, name: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The call the agent writes for a tau2 call (gold demonstrations)."""
        if self.tool_api is None:
            return name, arguments
        return self.tool_api.to_agent(name, arguments)

    @property
    def env_solo_mode(self) -> bool:
        """Build the environment in tau2's solo mode (agent also holds the user's tools)?
        Only official ticket tasks; skill tasks run a normal environment with no user."""
        return self.solo and self.source == "tau2"
