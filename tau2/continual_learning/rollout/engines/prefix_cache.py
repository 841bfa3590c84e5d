"""Prefix KV cache for multi-turn rollouts: attention keys/values kept between policy calls.

An episode's context only grows: each turn's prompt is the previous prompt, the model's turn and
the new tool/user tokens. Re-encoding the whole context every turn (what a stateless
``generate`` call, or tau2's orchestrator, does) makes prefill the dominant cost on a CPU. The
store keeps the keys/values of recent sequences; a new prompt reuses those of its longest common
prefix with any stored sequence (the keys/values of a position depend only on the tokens up to
it), so a turn encodes only its new tokens, and the episodes of a GRPO group, which share their
first prompt, encode it once.

Entries are valid only for the weights that produced them: :class:`PrefixCache` is cleared when
the model's parameters change (their in-place version counters move, as with an optimizer step
or ``load_state_dict``) or the autocast setting changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from tau2.continual_learning.rollout.engines.kv_buffer import Past


@dataclass
class CachedSequence:
    """Token ids and, per layer, keys and values (``[1, kv_heads, len, head_dim]``) of the
    tokens after the first ``parent_length``, which ``parent`` holds. A sequence that extends a
    stored one (an episode's next turn, the episodes of one prompt) keeps only its own part, so
    a prompt that many stored sequences share is held once."""

    tokens: list[int]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    last_used: int = 0
    parent: CachedSequence | None = None
    parent_length: int = 0

    def segments(self, length: int) -> list[Past]:
        """The keys/values of the first ``length`` tokens, as consecutive pieces (first first)."""
        own = length - self.parent_length
        if own <= 0:
            assert self.parent is not None
            return self.parent.segments(length)
        head = self.parent.segments(self.parent_length) if self.parent is not None else []
        return [*head, ([k[:, :, :own] for k in self.keys], [v[:, :, :own] for v in self.values])]

    def anchor(self, length: int) -> CachedSequence:
        """The first entry of the chain (``parent`` links) that holds the first ``length``
        tokens: what a new sequence sharing them should point to."""
        entry = self
        while entry.parent is not None and length <= entry.parent_length:
            entry = entry.parent
        return entry


@dataclass
class PrefixCacheStats:
    """Token counts since the cache was made: what was encoded and what was reused."""

    prefill_tokens: int = 0
    reused_tokens: int = 0
    invalidations: int = 0

    @property
    def reuse_fraction(self) -> float:
        total = self.prefill_tokens + self.reused_tokens
        return self.reused_tokens / total if total else 0.0


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two id lists (binary search on C-speed slices)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low] and a[:high] != b[:high]
    while high - low > 1:
        mid = (low + high) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid
    return low


class PrefixCache:
    """Least-recently-used store of :class:`CachedSequence` bounded by ``max_tokens`` in all."""

    def __init__(self, max_tokens: int = 65536) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.max_tokens = max_tokens
        self.entries: list[CachedSequence] = []
        self.stats = PrefixCacheStats()
        self._clock = 0
        self._fingerprint: tuple[Any, ...] | None = None

    @property
    def num_tokens(self) -> int:
        return sum(len(e.tokens) for e in self.entries)

    def clear(self) -> None:
        """Drop every entry (frees their memory)."""
        self.entries = []

    def validate(self, fingerprint: tuple[Any, ...]) -> None:
        """Clear the store if ``fingerprint`` (weights version, autocast state) has changed."""
        if fingerprint != self._fingerprint:
            if self.entries:
                self.stats.invalidations += 1
            self.clear()
            self._fingerprint = fingerprint

    def lookup(self, tokens: list[int]) -> tuple[CachedSequence | None, int]:
        """The entry sharing the longest prefix with ``tokens`` and that prefix's length."""
        best, best_length = None, 0
        for entry in self.entries:
            length = common_prefix_length(entry.tokens, tokens)
            if length > best_length:
                best, best_length = entry, length
        if best is not None:
            self._clock += 1
            best.last_used = self._clock
        return best, best_length

    def add(self, entry: CachedSequence) -> None:
        """Store ``entry``; entries it extends are dropped, then the least recently used until
        the store fits ``max_tokens``. An entry alone longer than the budget is not kept."""
        if len(entry.tokens) > self.max_tokens:
            return
        self.entries = [
            e
            for e in self.entries
            if not (
                len(e.tokens) <= len(entry.tokens) and entry.tokens[: len(e.tokens)] == e.tokens
            )
        ]
        self._clock += 1
        entry.last_used = self._clock
        self.entries.append(entry)
        total = self.num_tokens
        if total > self.max_tokens:
            for old in sorted(self.entries, key=lambda e: e.last_used):
                if total <= self.max_tokens:
                    break
                self.entries.remove(old)
                total -= len(old.tokens)
