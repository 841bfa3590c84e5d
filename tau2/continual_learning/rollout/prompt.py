"""Chat framing in token ids: the prompt, and the environment turns appended after a model turn.

The conversation is assembled by *concatenating token ids*, never by re-tokenising the whole
text, so ``prompt_ids + completion_ids`` is exactly what the model consumed and produced.
:class:`ChatFormat` learns the turn delimiters from the tokenizer's own chat template (ChatML
for SmolLM2 and Qwen: ``<|im_start|>role\\n...<|im_end|>\\n``); the model's turn ends with the
end-of-turn token it sampled itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tau2.continual_learning.rollout.tool_format import (
    DONE_TOOL,
    RESPOND_TOOL,
    format_call,
    render_tools,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The tokenizer's pad id, else its end-of-sequence id (padded positions are masked out)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


_SYS, _USR, _AST, _NXT = "\x01SYS\x01", "\x01USR\x01", "\x01AST\x01", "\x01NXT\x01"

AGENT_INSTRUCTION = (
    "You are a customer service agent that helps the user according to the <policy> below. "
    "In each turn you either send a message to the user or make tool calls. Always follow the "
    "policy and write valid JSON only."
)
SOLO_INSTRUCTION = (
    "You are a customer service agent working on the ticket below, with no user to talk to. "
    "Every turn is a tool call; call `done` when the ticket is resolved."
)


def agent_system_prompt(policy: str, tool_schemas: list[dict], *, solo: bool) -> str:
    """System prompt: instructions, the domain policy (may be empty) and the tool list."""
    parts = [f"<instructions>\n{SOLO_INSTRUCTION if solo else AGENT_INSTRUCTION}\n</instructions>"]
    if policy:
        parts.append(f"<policy>\n{policy.strip()}\n</policy>")
    example = (
        format_call(DONE_TOOL, {})
        if solo
        else format_call(RESPOND_TOOL, {"message": "How can I help you?"})
    )
    parts.append(render_tools(tool_schemas, example=example))
    return "\n".join(parts)


@dataclass(frozen=True)
class ChatFormat:
    """Turn delimiters of a tokenizer's chat template, for id-level conversation assembly."""

    tokenizer: PreTrainedTokenizerBase
    end_of_turn_id: int
    after_end_of_turn: str
    """Text the template puts after the end-of-turn token (``"\\n"`` in ChatML)."""
    user_open: str
    user_close_assistant_open: str

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> ChatFormat:
        """Derive the delimiters by rendering sentinel messages; raises ``ValueError`` when the
        template does not end assistant turns with the eos token."""
        base = [
            {"role": "system", "content": _SYS},
            {"role": "user", "content": _USR},
            {"role": "assistant", "content": _AST},
        ]
        closed = tokenizer.apply_chat_template(base, tokenize=False)
        extended = tokenizer.apply_chat_template(
            [*base, {"role": "user", "content": _NXT}], tokenize=False, add_generation_prompt=True
        )
        eos = tokenizer.eos_token
        after_ast = closed[closed.index(_AST) + len(_AST) :]
        if not extended.startswith(closed) or eos is None or not after_ast.startswith(eos):
            raise ValueError(
                "Unsupported chat template: assistant turns must end with the eos token "
                f"({eos!r}) and the template must render conversations incrementally (ChatML does)."
            )
        tail = extended[len(closed) :]
        user_open, user_close_assistant_open = tail.split(_NXT)
        return cls(
            tokenizer=tokenizer,
            end_of_turn_id=tokenizer.convert_tokens_to_ids(eos),
            after_end_of_turn=after_ast[len(eos) :],
            user_open=user_open,
            user_close_assistant_open=user_close_assistant_open,
        )

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special-token strings map to their ids; no BOS added)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def prompt_ids(
        self, system: str, turns: list[tuple[str, str]], assistant_prefix: str = ""
    ) -> list[int]:
        """The episode prompt: system + ``(role, text)`` turns + assistant header + prefix."""
        messages = [{"role": "system", "content": system}]
        messages += [{"role": role, "content": text} for role, text in turns]
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return self.encode(text) + self.encode(assistant_prefix)

    def env_turn_ids(
        self, user_text: str, assistant_prefix: str = "", *, close_turn: bool = False
    ) -> list[int]:
        """Ids appended after a model turn: the rest of the template's turn close (with the
        end-of-turn token itself when ``close_turn``, i.e. a stop string ended the turn), a
        user turn with ``user_text``, the assistant header and the prefix."""
        closing = (self.tokenizer.eos_token if close_turn else "") + self.after_end_of_turn
        text = closing + self.user_open + user_text + self.user_close_assistant_open
        return self.encode(text) + self.encode(assistant_prefix)
