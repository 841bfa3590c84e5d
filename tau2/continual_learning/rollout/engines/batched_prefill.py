"""How the prompts of a batch are encoded over the prefix cache: packs, layout, sharing.

Each prompt reuses the keys/values of the longest prefix the cache holds (``reuse`` tokens) and
encodes the rest (its *suffix*). Suffixes are encoded several rows per forward pass, in *packs*
of similar length (:func:`packs`) of about :data:`PACK_TOKENS` tokens: on a CPU a pass of a few
hundred tokens runs faster per token than one short row (per-pass overhead) and than one huge
batch (activations fall out of cache); figures in docs/results.md.
A pack is laid out as

    [left padding][reused keys/values, R columns][gap][suffix]      (R = the longest reuse)

so that every suffix ends in the last column (one logits position serves every row). Gaps and
padding are masked out of attention and position ids are each token's own, so a row is computed
as it would be alone.

Before that, prefixes that several prompts of the batch share beyond what the cache holds
(a GRPO group's prompt) are encoded once (:func:`shared_prefixes`), not once per row.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from tau2.continual_learning.rollout.engines.prefix_cache import common_prefix_length

PACK_TOKENS = 1024
"""Rows of a pack times its longest suffix stay within this (a longer row is a pack alone)."""

MIN_SHARED_SAVING = 64
"""Encode a shared prefix first only if that saves at least this many prompt tokens."""


@dataclass(frozen=True)
class PrefillLayout:
    """Columns of a batched prefill: row ``i`` holds ``sequences[i]``, of which the first
    ``reuse[i]`` tokens come from the cache."""

    sequences: list[list[int]]
    reuse: list[int]

    def __post_init__(self) -> None:
        for sequence, reused in zip(self.sequences, self.reuse, strict=True):
            if not 0 <= reused < len(sequence):
                raise ValueError("each row must encode at least one token of its own")

    @property
    def past_width(self) -> int:
        """``R``: columns holding reused keys/values."""
        return max(self.reuse)

    @property
    def suffix_width(self) -> int:
        """``S``: columns encoded by the pass."""
        return max(len(s) - r for s, r in zip(self.sequences, self.reuse, strict=True))

    @property
    def width(self) -> int:
        return self.past_width + self.suffix_width

    def suffix_ids(self, pad_id: int) -> list[list[int]]:
        """Input ids of the pass, ``[rows, S]``: each suffix right-aligned after padding."""
        width = self.suffix_width
        return [
            [pad_id] * (width - len(s) + r) + s[r:]
            for s, r in zip(self.sequences, self.reuse, strict=True)
        ]

    def position_ids(self) -> list[list[int]]:
        """Position of each input column (padding columns repeat the first real position)."""
        width = self.suffix_width
        return [
            [r] * (width - len(s) + r) + list(range(r, len(s)))
            for s, r in zip(self.sequences, self.reuse, strict=True)
        ]

    def attention_mask(self) -> list[list[int]]:
        """``[rows, R + S]``: 1 where a column holds one of the row's tokens."""
        past, width = self.past_width, self.suffix_width
        return [
            [0] * (past - r) + [1] * r + [0] * (width - len(s) + r) + [1] * (len(s) - r)
            for s, r in zip(self.sequences, self.reuse, strict=True)
        ]

    def columns(self, row: int) -> list[int]:
        """The columns holding row ``row``'s tokens, in order."""
        sequence, reused = self.sequences[row], self.reuse[row]
        past, width = self.past_width, self.suffix_width
        return [
            *range(past - reused, past),
            *range(past + width - len(sequence) + reused, self.width),
        ]


def shared_prefixes(
    prompts: list[list[int]], reuse: list[int], min_saving: int = MIN_SHARED_SAVING
) -> list[list[int]]:
    """Prefixes worth encoding before a batch: for each prompt, the longest prefix it shares
    with another prompt of the batch (at most all but its last token, which the batch pass
    must encode to yield logits), kept where encoding it once instead of once per prompt saves
    at least ``min_saving`` tokens over what the cache (``reuse[i]`` tokens) already holds."""
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    longest = [0] * len(prompts)
    for a, b in itertools.pairwise(order):  # the longest shared prefix: a sorted neighbour's
        shared = common_prefix_length(prompts[a], prompts[b])
        longest[a], longest[b] = max(longest[a], shared), max(longest[b], shared)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, prompt in enumerate(prompts):
        length = min(longest[i], len(prompt) - 1)
        if length > reuse[i]:
            groups.setdefault(tuple(prompt[:length]), []).append(i)
    return [
        list(prefix)
        for prefix, members in groups.items()
        if sum(len(prefix) - reuse[i] for i in members[1:]) >= min_saving
    ]


def packs(suffix_lengths: list[int], budget: int = PACK_TOKENS) -> list[list[int]]:
    """Row indices grouped into passes: by suffix length, each pack's row count times its
    longest suffix within ``budget`` (padding to that longest suffix is the only waste)."""
    out: list[list[int]] = []
    for i in sorted(range(len(suffix_lengths)), key=lambda i: suffix_lengths[i]):
        if out and (len(out[-1]) + 1) * suffix_lengths[i] <= budget:
            out[-1].append(i)
        else:
            out.append([i])
    return out
