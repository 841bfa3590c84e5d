"""Scripted backends that drive the real runner path with known text: gold-action replays
(:func:`replay_gold`: the warm start's demonstrations, ``scripts/check_gold_replay.py``, the
scoring benchmark, tests) and arbitrary model outputs (fuzzing).

:class:`ScriptedPolicy` answers each prompt with text chosen by a function of the decoded
context, tokenised and ended with the end-of-turn token, exactly where a model's sample would
go; everything downstream (parsing, ``env.get_response``, token assembly, scoring) is the
production code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tau2.data_model.message import UserMessage

from tau2.continual_learning.rollout.engines.base import (
    Generation,
    SamplingParams,
    split_generation,
)
from tau2.continual_learning.rollout.runner import EpisodeRunner
from tau2.continual_learning.rollout.tool_format import (
    CALL_PREFIX,
    DONE_TOOL,
    RESPOND_TOOL,
    format_call,
)

if TYPE_CHECKING:
    from tau2.environment.environment import Environment
    from transformers import PreTrainedTokenizerBase

    from tau2.continual_learning.rollout.domain_task import DomainTask
    from tau2.continual_learning.rollout.episode import Episode
    from tau2.continual_learning.rollout.users import UserRequest


class ScriptedPolicy:
    """A policy whose turn is ``script(context_text)`` followed by the end-of-turn token; a
    leading ``prefix`` already present at the end of the context is not repeated. Log-probs
    are 0.0 (the text is given, not sampled)."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, script: Callable[[str], str], *, prefix: str = ""
    ) -> None:
        self.tokenizer = tokenizer
        self.script = script
        self.prefix = prefix

    def generate(
        self, prompts: list[list[int]], sampling: SamplingParams, seed: int | None = None
    ) -> list[Generation]:
        out = []
        for prompt in prompts:
            context = self.tokenizer.decode(prompt, skip_special_tokens=False)
            text = self.script(context)
            if self.prefix and context.endswith(self.prefix) and text.startswith(self.prefix):
                text = text[len(self.prefix) :]
            ids = [
                *self.tokenizer(text, add_special_tokens=False)["input_ids"],
                self.tokenizer.eos_token_id,
            ]
            ids = ids[: sampling.max_new_tokens]  # like a model: cut at the limit or a stop string
            eos = self.tokenizer.eos_token_id
            out.append(
                split_generation(ids, [0.0] * len(ids), eos, self.tokenizer, sampling.stop_strings)
            )
        return out


class ScriptedUser:
    """A user that opens with ``opening`` (formatted with ``task_key``) and then says
    ``###STOP###`` to whatever the agent says."""

    def __init__(self, opening: str = "Hello, this is about {task_key}.") -> None:
        self.opening = opening

    def start(self, task: DomainTask, env: Environment) -> dict[str, Any]:
        return {"key": task.key, "turns": 0}

    def reply(
        self, requests: list[UserRequest], seed: int | None = None
    ) -> list[UserMessage | BaseException]:
        replies: list[UserMessage | BaseException] = []
        for state, _ in requests:
            text = (
                self.opening.format(task_key=state["key"]) if state["turns"] == 0 else "###STOP###"
            )
            state["turns"] += 1
            replies.append(UserMessage(role="user", content=text))
        return replies


def gold_turns(task: DomainTask) -> list[str]:
    """The agent turns that replay ``task``'s gold actions, one call per turn, in the task's
    tool API, then finish: ``done`` in solo mode, else ``respond`` with the
    ``communicate_info`` strings."""
    criteria = task.task.evaluation_criteria
    actions = criteria.actions or [] if criteria is not None else []
    turns = [format_call(*task.agent_call(a.name, a.arguments)) for a in actions]
    if task.solo:
        return [*turns, format_call(DONE_TOOL, {})]
    info = criteria.communicate_info if criteria is not None else None
    message = " ".join(info) if info else "Your request has been handled."
    return [*turns, format_call(RESPOND_TOOL, {"message": message})]


def gold_script(
    tasks: list[DomainTask], opening: str = "Hello, this is about {task_key}."
) -> Callable[[str], str]:
    """A :class:`ScriptedPolicy` script replaying the gold turns of several tasks at once.

    Episodes are told apart by the ticket (solo) or the :class:`ScriptedUser` opening, and
    the turn index is the number of assistant turns already in the context."""
    anchors = {}
    for task in tasks:
        anchor = task.task.ticket if task.solo else opening.format(task_key=task.key)
        anchors[anchor] = gold_turns(task)

    def script(context: str) -> str:
        for anchor, turns in anchors.items():
            position = context.rfind(anchor)
            if position >= 0:
                index = context.count("<tool_call>", position) - (
                    1 if context.rstrip().endswith(('"name": "', "<tool_call>")) else 0
                )
                return turns[min(index, len(turns) - 1)]
        raise KeyError("context matches no scripted task")

    return script


def unique_anchor_batches(tasks: Sequence[DomainTask]) -> list[list[DomainTask]]:
    """Batches in which no two tasks share an anchor (ticket or key): :func:`gold_script` tells
    episodes apart by it."""
    batches: list[tuple[set[str], list[DomainTask]]] = []
    for task in tasks:
        anchor = (task.task.ticket or "") if task.solo else task.key
        target = next((b for b in batches if anchor not in b[0]), None)
        if target is None:
            target = (set(), [])
            batches.append(target)
        target[0].add(anchor)
        target[1].append(task)
    return [b[1] for b in batches]


def replay_gold(
    tasks: Sequence[DomainTask],
    tokenizer: PreTrainedTokenizerBase,
    *,
    assistant_prefix: str = CALL_PREFIX,
    max_tool_response_chars: int | None = None,
    scoring_workers: int = 0,
) -> list[Episode]:
    """Each task's gold actions replayed through the episode runner (:class:`ScriptedPolicy`
    with :func:`gold_script`, :class:`ScriptedUser`), scored by tau2's evaluators, in task order.
    Tool responses are shown as a run shows them (``max_tool_response_chars``); the turn, token
    and context limits leave every gold replay room to finish."""
    episodes: dict[int, Episode] = {}
    for batch in unique_anchor_batches(tasks):
        policy = ScriptedPolicy(tokenizer, gold_script(batch), prefix=assistant_prefix)
        with EpisodeRunner(
            policy,
            user=ScriptedUser(),
            max_turns=max(len(gold_turns(t)) for t in batch) + 1,
            max_new_tokens_per_turn=1 << 14,
            max_context_tokens=1 << 24,
            max_tool_response_chars=max_tool_response_chars,
            assistant_prefix=assistant_prefix,
            scoring_workers=scoring_workers,
        ) as runner:
            episodes |= {id(t): e for t, e in zip(batch, runner.run(batch), strict=True)}
    return [episodes[id(t)] for t in tasks]
