"""One episode: the per-episode state machine and the finished :class:`Episode` record.

An episode alternates between waiting on the agent (a batched policy call), on the user (a
batched user-model call) and being done. Model turns are parsed with
:mod:`~tau2.continual_learning.rollout.tool_format`; real tool calls run on the episode's own
environment with ``env.get_response`` (tau2 turns every tool failure into an ``"Error: ..."``
tool message); the tau2 trajectory is kept alongside the token ids for scoring. A task with
its own tool API (API-migration variants) has each call translated to tau2's tool first: the
tokens hold what the model wrote, the trajectory the tau2 call, and a call that does not
translate is an error message, like malformed JSON.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tau2.data_model.message import AssistantMessage, Message, ToolCall, ToolMessage, UserMessage

from tau2.continual_learning.rollout.environments import own_database_before
from tau2.continual_learning.rollout.tool_format import (
    DONE_TOOL,
    RESPOND_TOOL,
    ParsedCall,
    format_call,
    format_tool_responses,
    parse_turn,
)

if TYPE_CHECKING:
    from tau2.environment.environment import Environment

    from tau2.continual_learning.rollout.domain_task import DomainTask
    from tau2.continual_learning.rollout.engines.base import Generation
    from tau2.continual_learning.rollout.prompt import ChatFormat

FIRST_AGENT_MESSAGE = "Hi! How can I help you today?"
"""tau2's orchestrator opens every user-mode conversation with this agent message."""
USER_STOP_TOKENS = ("###STOP###", "###TRANSFER###", "###OUT-OF-SCOPE###")
SOLO_STOP_TEXT = "###STOP###"


class Termination(str, enum.Enum):
    """Why an episode ended. Only ``AGENT_STOP`` and ``USER_STOP`` are scored; the others
    get reward 0, as in tau2."""

    AGENT_STOP = "agent_stop"
    USER_STOP = "user_stop"
    MAX_TURNS = "max_turns"
    MAX_NEW_TOKENS = "max_new_tokens"
    MAX_CONTEXT = "max_context"
    TOO_MANY_ERRORS = "too_many_errors"
    USER_ERROR = "user_error"
    CRASH = "crash"
    SCORING_ERROR = "scoring_error"


@dataclass(frozen=True)
class EpisodeLimits:
    """Per-episode limits; reaching one ends the episode with the matching termination."""

    max_turns: int = 10
    max_new_tokens_per_turn: int = 256
    max_context_tokens: int = 8192
    max_errors: int = 10
    max_tool_response_chars: int | None = None
    """Tool responses longer than this are shortened in what the model sees (head and tail,
    :func:`~tau2.continual_learning.rollout.tool_format.shorten_tool_response`); the trajectory
    tau2 scores keeps them whole. ``None``: shown whole."""

    def __post_init__(self) -> None:
        for name in ("max_turns", "max_new_tokens_per_turn", "max_context_tokens", "max_errors"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        limit = self.max_tool_response_chars
        if limit is not None and limit < 64:
            raise ValueError(f"max_tool_response_chars must be None or >= 64, got {limit}")


@dataclass
class Episode:
    """A finished episode: GRPO token data plus the tau2 trajectory and its reward.

    ``prompt_ids + completion_ids`` is exactly the token sequence the model consumed and
    produced. ``env_mask[i]`` is 1 where ``completion_ids[i]`` was sampled by the model and 0
    for tool/user/template tokens; ``logprobs[i]`` is the sampling log-prob (0.0 for env tokens).
    """

    task: DomainTask
    generation_index: int
    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]
    logprobs: list[float]
    reward: float
    reward_info: dict[str, Any]
    termination_reason: str
    num_turns: int
    messages: list[Message]
    completion_text: str

    @property
    def key(self) -> str:
        return self.task.key

    @property
    def num_model_tokens(self) -> int:
        return sum(self.env_mask)


class Waiting(str, enum.Enum):
    AGENT = "agent"
    USER = "user"
    DONE = "done"


@dataclass
class EpisodeState:
    """Mutable state of one running episode (internal to the runner)."""

    task: DomainTask
    generation_index: int
    env: Environment
    chat: ChatFormat
    system_prompt: str
    assistant_prefix: str
    limits: EpisodeLimits
    solo_reminder: str = ""
    """Shown to the model after the tool responses of solo episodes (prompt-side only)."""
    messages: list[Message] = field(default_factory=list)
    prompt_ids: list[int] | None = None
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    waiting: Waiting = Waiting.AGENT
    termination: Termination | None = None
    error: str | None = None
    num_turns: int = 0
    num_errors: int = 0
    num_user_turns: int = 0
    turn_open: bool = False
    """The last model turn ended at a stop string, so the env must close it."""
    user_state: Any = None
    to_user: Message | list[ToolMessage] | None = None
    """What the user model must answer next (agent message, or results of its own tool calls)."""
    shares_database: bool = False
    """``env`` still reads the process's shared database (see ``shared_database``)."""

    # -- set-up -------------------------------------------------------------------------------
    def start(self) -> None:
        """Initial state: solo episodes wait on the agent, others on the user's opening."""
        history = list(self._history())
        self.messages = history
        turns = history_turns(history, self.limits.max_tool_response_chars)
        if self.task.solo:
            ticket = self.task.task.ticket or ""
            self.prompt_ids = self.chat.prompt_ids(
                self.system_prompt, [*turns, ("user", ticket)], self.assistant_prefix
            )
            self.waiting = Waiting.AGENT
            self._check_context()
        else:
            greeting = AssistantMessage(role="assistant", content=FIRST_AGENT_MESSAGE)
            self.messages.append(greeting)
            self.to_user = greeting
            self.waiting = Waiting.USER

    def _history(self) -> list[Message]:
        state = self.task.task.initial_state
        return list(state.message_history or []) if state is not None else []

    # -- transitions --------------------------------------------------------------------------
    def context_ids(self) -> list[int]:
        assert self.prompt_ids is not None
        return self.prompt_ids + self.completion_ids

    def finish(self, reason: Termination, error: str | None = None) -> None:
        self.termination = reason
        self.error = error
        self.waiting = Waiting.DONE

    def apply_generation(self, generation: Generation) -> None:
        """Record a model turn, act on it, and move to the next state."""
        self.completion_ids += generation.token_ids
        self.env_mask += [1] * len(generation.token_ids)
        self.logprobs += list(generation.logprobs)
        self.num_turns += 1
        if len(self.context_ids()) > self.limits.max_context_tokens:
            self._check_context()
            return
        eos = generation.finish_reason == "eos"
        self.turn_open = not eos
        text = self.assistant_prefix + self.chat.decode(
            generation.token_ids[:-1] if eos else generation.token_ids
        )
        if not generation.finished:
            self.messages.append(AssistantMessage(role="assistant", content=text))
            self.finish(Termination.MAX_NEW_TOKENS)
            return
        feedback = self._act(text)
        if self.waiting is Waiting.DONE:
            return
        if self.num_errors >= self.limits.max_errors:
            self.finish(Termination.TOO_MANY_ERRORS)
        elif self.num_turns >= self.limits.max_turns and self.waiting is Waiting.AGENT:
            self.finish(Termination.MAX_TURNS)
        elif feedback is not None:
            reminder = f"\n{self.solo_reminder}" if self.task.solo and self.solo_reminder else ""
            responses = format_tool_responses(feedback, self.limits.max_tool_response_chars)
            self._append_env_turn(responses + reminder)
        else:
            self._check_context()

    def apply_user_message(self, message: UserMessage) -> None:
        """Record the user's reply: a stop, tool calls of its own, or text for the agent."""
        self.num_user_turns += 1
        if not message.is_tool_call() and not (message.content or "").strip():
            self.finish(Termination.USER_ERROR, "the user model returned an empty message")
            return
        self.messages.append(message)
        if message.is_tool_call():
            results = [self._respond(call) for call in message.tool_calls]
            self.messages += results
            self.to_user = results
            if self.num_user_turns >= 3 * self.limits.max_turns:
                self.finish(Termination.MAX_TURNS)
            return
        content = message.content or ""
        if any(token in content for token in USER_STOP_TOKENS):
            self.finish(Termination.USER_STOP)
            return
        self.to_user = None
        self.waiting = Waiting.AGENT
        if self.num_turns >= self.limits.max_turns:
            self.finish(Termination.MAX_TURNS)
        elif self.prompt_ids is None:
            history = history_turns(self.messages[:-1], self.limits.max_tool_response_chars)
            turns = [*history, ("user", content)]
            self.prompt_ids = self.chat.prompt_ids(self.system_prompt, turns, self.assistant_prefix)
            self._check_context()
        else:
            self._append_env_turn(content)

    # -- internals ----------------------------------------------------------------------------
    def _act(self, text: str) -> list[str] | None:
        """Carry out a parsed model turn; returns tool-response texts for the model, or
        ``None`` when the turn went to the user or ended the episode."""
        turn = parse_turn(text)
        pseudo = {RESPOND_TOOL} if not self.task.solo else {DONE_TOOL}
        only_pseudo = (
            len(turn.calls) == 1 and turn.calls[0].error is None and turn.calls[0].name in pseudo
        )
        if only_pseudo:
            return self._pseudo_call(turn.calls[0])
        if not turn.calls:
            if self.task.solo or not turn.text:
                self.num_errors += 1
                reason = "Every turn must be a tool call" if self.task.solo else "Empty message"
                return [f"Error: {reason}; write calls as <tool_call>{{...}}</tool_call>."]
            return self._say(turn.text)
        feedback: list[str] = []
        calls: list[ToolCall] = []
        results: list[ToolMessage] = []
        for call in turn.calls:
            error = call.error
            if error is None and call.name in pseudo:
                error = f"'{call.name}' must be the only call of its turn."
            if error is None:
                try:  # the task's API -> tau2's tool (identity unless a migrated API)
                    name, arguments = self.task.environment_call(call.name, call.arguments)
                except ValueError as exc:
                    error = str(exc)
            if error is not None:
                feedback.append(f"Error: {error}")
                self.num_errors += 1
                continue
            tool_call = ToolCall(
                id=f"call_{self.num_turns}_{len(calls)}",
                name=name,
                arguments=arguments,
                requestor="assistant",
            )
            result = self._respond(tool_call)
            calls.append(tool_call)
            results.append(result)
            feedback.append(result.content or "")
            self.num_errors += int(result.error)
        if calls:
            self.messages.append(AssistantMessage(role="assistant", content=None, tool_calls=calls))
            self.messages += results
        return feedback

    def _respond(self, call: ToolCall) -> ToolMessage:
        """tau2's response to a tool call; a shared database is copied before a write."""
        if self.shares_database:
            self.shares_database = own_database_before(self.env, call.name)
        return self.env.get_response(call)

    def _pseudo_call(self, call: ParsedCall) -> list[str] | None:
        if call.name == DONE_TOOL:
            self.messages.append(AssistantMessage(role="assistant", content=SOLO_STOP_TEXT))
            self.finish(Termination.AGENT_STOP)
            return None
        message = call.arguments.get("message")
        if not isinstance(message, str) or not message.strip():
            self.num_errors += 1
            return ["Error: 'respond' needs a non-empty string argument 'message'."]
        return self._say(message)

    def _say(self, text: str) -> None:
        message = AssistantMessage(role="assistant", content=text)
        self.messages.append(message)
        self.to_user = message
        self.waiting = Waiting.USER

    def _append_env_turn(self, text: str) -> None:
        ids = self.chat.env_turn_ids(text, self.assistant_prefix, close_turn=self.turn_open)
        self.completion_ids += ids
        self.env_mask += [0] * len(ids)
        self.logprobs += [0.0] * len(ids)
        self._check_context()

    def _check_context(self) -> None:
        """End the episode when the context leaves no room for one more model turn."""
        budget = self.limits.max_context_tokens
        if len(self.context_ids()) >= budget:
            keep = max(0, budget - len(self.prompt_ids or []))
            del self.completion_ids[keep:], self.env_mask[keep:], self.logprobs[keep:]
            self.finish(Termination.MAX_CONTEXT)

    def result(self, reward: float, reward_info: dict[str, Any]) -> Episode:
        """The finished :class:`Episode` (call once the episode is done and scored)."""
        assert self.termination is not None
        completion_text = self.chat.decode(self.completion_ids)
        return Episode(
            task=self.task,
            generation_index=self.generation_index,
            prompt_ids=list(self.prompt_ids or []),
            completion_ids=self.completion_ids,
            env_mask=self.env_mask,
            logprobs=self.logprobs,
            reward=reward,
            reward_info=reward_info,
            termination_reason=self.termination.value,
            num_turns=self.num_turns,
            messages=self.messages,
            completion_text=completion_text,
        )


def history_turns(
    messages: list[Message], max_tool_response_chars: int | None = None
) -> list[tuple[str, str]]:
    """Render tau2 messages as ``(role, text)`` prompt turns in our tool format (tool
    responses shortened as in live turns)."""
    turns: list[tuple[str, str]] = []
    pending: list[str] = []
    for message in messages:
        if isinstance(message, ToolMessage):
            pending.append(message.content or "")
            continue
        if pending:
            turns.append(("user", format_tool_responses(pending, max_tool_response_chars)))
            pending = []
        if isinstance(message, (AssistantMessage, UserMessage)):
            text = message.content or ""
            if message.tool_calls:
                text += "".join(format_call(c.name, c.arguments) for c in message.tool_calls)
            turns.append((message.role, text))
    if pending:
        turns.append(("user", format_tool_responses(pending, max_tool_response_chars)))
    return turns
