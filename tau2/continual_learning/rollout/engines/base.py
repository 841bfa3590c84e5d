"""What every sampling engine shares: the :class:`Policy` protocol the episode runner calls,
how one turn is sampled (:class:`SamplingParams`), what comes back (:class:`Generation`), and
where a raw continuation ends (:func:`split_generation`).

A backend takes prompts as token-id lists (the runner assembles conversations in ids) and
returns, for each prompt, the new token ids and the log-probability of each sampled token under
the distribution it was sampled from (after temperature and top-p), which is what GRPO's
importance ratios need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one turn. ``temperature == 0`` means greedy decoding."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_strings: tuple[str, ...] = ()
    """Besides the eos token, end a turn once the sampled text contains one of these."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")


@dataclass(frozen=True)
class Generation:
    """One sampled turn: new ids and their log-probs. ``finish_reason`` is ``"eos"`` (the
    end-of-turn id is the last id), ``"stop"`` (a stop string ended it; the turn is still
    open) or ``"length"`` (the token limit cut it)."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str

    @property
    def finished(self) -> bool:
        return self.finish_reason != "length"


@runtime_checkable
class Policy(Protocol):
    """What :class:`EpisodeRunner` needs from a backend. A backend that keeps state between
    calls (``HFPolicy``'s prefix cache) may also offer ``clear_cache()``, which the runner calls
    when a run ends."""

    tokenizer: PreTrainedTokenizerBase

    def generate(
        self, prompts: list[list[int]], sampling: SamplingParams, seed: int | None = None
    ) -> list[Generation]:
        """Sample one continuation per prompt, stopping at the tokenizer's eos token."""
        ...


def turn_end(
    token: int, text: str, stop_id: int, tokenizer: Any, stop_strings: tuple[str, ...]
) -> tuple[str | None, str]:
    """Whether ``token``, sampled after ``text``, ends the turn: ``"eos"``, ``"stop"`` (it
    completes a stop string) or ``None``; and the turn's text with it (kept only for stop
    strings)."""
    if token == stop_id:
        return "eos", text
    if stop_strings:
        text += tokenizer.decode([token])
        if any(s in text for s in stop_strings):
            return "stop", text
    return None, text


def split_generation(
    ids: list[int],
    logprobs: list[float],
    stop_id: int,
    tokenizer: Any = None,
    stop_strings: tuple[str, ...] = (),
) -> Generation:
    """Cut a raw continuation after the first ``stop_id`` or the token completing a stop
    string, whichever comes first (anything after it is batch padding)."""
    text = ""
    for end, token in enumerate(ids, start=1):
        reason, text = turn_end(token, text, stop_id, tokenizer, stop_strings)
        if reason is not None:
            return Generation(ids[:end], logprobs[:end], reason)
    return Generation(ids, logprobs, "length")
