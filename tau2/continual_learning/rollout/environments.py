"""The tau2 domains' environments as episodes use them: constructors, the agent's tool schemas,
the domain policy, and copy-on-write databases.

Tool schemas and policies are built once per process and cached. Every episode still gets a
fresh environment, because tools mutate their database in place; but episodes share one parsed
database until they write to it:

tau2 builds every environment's database from JSON and validates it with pydantic: 0.3 s per
airline episode, about 0.15 s per retail one (measured). Most rollout episodes only read, so
for domains whose whole state is the agent's database (airline, retail, mock: no user tools,
no tool syncing) a new environment starts on one shared database parsed once per process, and
an episode gets its own copy just before its first tool call that is not a ``READ``/``THINK``
tool (:func:`own_database_before`). Tasks with an initial state, and other domains (telecom
syncs the user's device database on every call), get fresh environments as before.

Scoring replays an episode's tool calls on the same terms (:func:`replay_environment`): on the
shared database while the calls only read, else on a private copy of it, never from disk.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from tau2.continual_learning import hygiene
from tau2.continual_learning.rollout.domain_task import DOMAINS, check_domain
from tau2.continual_learning.rollout.tool_format import DONE_TOOL, PSEUDO_TOOL_SCHEMAS, RESPOND_TOOL

hygiene.configure_tau2_environment()

if TYPE_CHECKING:
    from tau2.environment.environment import Environment

    from tau2.continual_learning.rollout.domain_task import DomainTask


def environment_module(domain: str) -> Any:
    """tau2's module of a tau2 domain (an API-migration variant has none: use
    ``DomainTask.environment_domain``)."""
    return importlib.import_module(f"tau2.domains.{check_domain(domain, DOMAINS)}.environment")


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


def agent_tool_schemas(
    domain: str, solo: bool, env_solo_mode: bool, tool_names: tuple[str, ...] | None
) -> list[dict[str, Any]]:
    """The tools shown to the agent of a task: the domain's (only ``tool_names`` when given,
    in that order) plus the turn-ending pseudo tool (``done`` solo, ``respond`` with a user)."""
    schemas = tool_schemas(domain, solo_mode=env_solo_mode)
    if tool_names is not None:
        by_name = {s["name"]: s for s in schemas}
        schemas = [by_name[name] for name in tool_names]
    return [*schemas, PSEUDO_TOOL_SCHEMAS[DONE_TOOL if solo else RESPOND_TOOL]]


@functools.cache
def policy_text(domain: str, solo_mode: bool = False) -> str:
    """The domain policy the agent must follow (the solo variant where tau2 has one)."""
    return environment_constructor(domain)(solo_mode=solo_mode).get_policy()


@functools.cache
def _template(domain: str, solo_mode: bool) -> Environment:
    """One environment per domain and mode: inspected once, and its database (parsed once per
    process, never written to) is the one new environments share."""
    return environment_constructor(domain)(solo_mode=solo_mode)


def shares_database(domain: str, solo_mode: bool) -> bool:
    """Whether environments of ``domain`` can start on a shared database: their only state is
    the agent toolkit's database (no user tools, tau2's no-op ``sync_tools``), and tau2's
    constructor accepts a database."""
    from tau2.environment.environment import Environment

    if "db" not in inspect.signature(environment_constructor(domain)).parameters:
        return False
    env = _template(domain, solo_mode)
    return (
        env.user_tools is None
        and env.tools is not None
        and env.tools.db is not None
        and type(env).sync_tools is Environment.sync_tools
    )


def shared_database(domain: str, solo_mode: bool) -> Any:
    """The process's parsed database of ``domain``, never written to."""
    return _template(domain, solo_mode).tools.db


def new_environment(task: DomainTask) -> tuple[Environment, bool]:
    """A fresh environment for ``task`` with the task's initial state applied, and whether it
    still shares the process's database (then call :func:`own_database_before` before each
    tool call)."""
    domain = task.environment_domain
    constructor = environment_constructor(domain)
    initial = task.task.initial_state
    if initial is None and shares_database(domain, task.env_solo_mode):
        db = shared_database(domain, task.env_solo_mode)
        return constructor(db=db, solo_mode=task.env_solo_mode), True
    env = constructor(solo_mode=task.env_solo_mode)
    if initial is not None:
        env.set_state(
            initialization_data=initial.initialization_data,
            initialization_actions=initial.initialization_actions,
            message_history=list(initial.message_history or []),
        )
    return env, False


def own_database_before(env: Environment, tool_name: str) -> bool:
    """Give ``env`` its own copy of its database if calling ``tool_name`` may write to it;
    returns whether it still shares the database afterwards."""
    from tau2.environment.toolkit import ToolType

    tools = env.tools
    if tools is None or not tools.has_tool(tool_name):  # tau2 answers with an error, no write
        return True
    if tools.tool_type(tool_name) in (ToolType.READ, ToolType.THINK):
        return True
    tools.db = _private_copy(tools.db)
    return False


def replay_environment(
    domain: str, solo_mode: bool, tool_names: Iterable[str], initializes: bool
) -> tuple[Environment, bool]:
    """A fresh environment of ``domain`` on which to replay calls of ``tool_names`` (and to
    apply a task's initial state when ``initializes``), and whether it still shares the
    process's database: it does when the calls only read, else it starts on a private copy of
    that database (domains that cannot share one are built by tau2's constructor)."""
    constructor = environment_constructor(domain)
    if not shares_database(domain, solo_mode):
        return constructor(solo_mode=solo_mode), False
    env = constructor(db=shared_database(domain, solo_mode), solo_mode=solo_mode)
    if initializes:
        env.tools.db = _private_copy(env.tools.db)
        return env, False
    return env, all(own_database_before(env, name) for name in tool_names)


@functools.cache
def shared_database_hash(domain: str, solo_mode: bool) -> str:
    """tau2's hash (``Environment.get_db_hash``) of the process's shared database, computed
    once: the database is never written to."""
    return _template(domain, solo_mode).get_db_hash()


def _private_copy(db: Any) -> Any:
    """A copy of the shared database ``db`` that shares no object with it."""
    return type(db).model_validate_json(_as_json(db))


_JSON: dict[int, tuple[Any, str]] = {}
"""JSON of each shared database, by ``id`` (the database is kept so that the id stays its)."""


def _as_json(db: Any) -> str:
    """``db`` as JSON, serialised once: a private copy is validated from it, twice as fast as
    a deep copy (airline 0.24 s against 0.48 s, retail 0.09 s against 0.13 s; measured) and
    sharing no object with ``db``. Only shared databases, never written to, come here."""
    if id(db) not in _JSON:
        _JSON[id(db)] = (db, db.model_dump_json())
    return _JSON[id(db)][1]
