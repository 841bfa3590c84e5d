"""Speculative decoding with prompt-lookup drafts: several tokens per forward pass, same output.

An agent's turns copy a lot from their context: tool names and ids from the prompt, whole
phrases of earlier calls, and an untrained model's loops repeat themselves. A draft is the
continuation of the latest earlier occurrence of the context's last few tokens (an n-gram
lookup, no draft model); one forward pass scores the pending token and the draft together,
and the drafted tokens are accepted while they agree with what the policy samples:

- greedy: a drafted token is kept while it equals the argmax, so the output is the plain
  greedy decode (up to float rounding between a one- and a multi-token pass);
- sampling: a drafted token ``d`` is kept with probability ``p(d)``; at the first rejection the
  token is drawn from ``p`` without ``d`` (renormalised). Each emitted token is then distributed
  exactly as ``p`` (speculative sampling with a point-mass draft, Leviathan et al. 2023), and
  its recorded log-prob is ``log p`` as without drafts.

Either way the pass also yields one more token (the correction, or the token after a fully
accepted draft), so a step emits between 1 and ``len(draft) + 1`` tokens. On a CPU a decode
step of a few rows costs about as much as reading the weights once, so scoring a few more
positions per row is nearly free (figures in docs/results.md, "Prompt-lookup decoding").

transformers has prompt-lookup drafting (``prompt_lookup_num_tokens``) only inside
``generate`` for a batch of one; this module serves :class:`HFPolicy`'s batched, prefix-cached
decoding loop, where rows accept different numbers of tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tau2.continual_learning.rollout.engines.sampler import draw

if TYPE_CHECKING:
    import torch

MAX_NGRAM = 3
"""Longest n-gram matched; shorter ones are tried when it has no earlier occurrence."""


class PromptLookup:
    """Drafts for one growing token sequence: the continuation of the latest earlier
    occurrence of its last ``n`` tokens, ``n`` from :data:`MAX_NGRAM` down to 1.

    An index maps each n-gram to where its latest occurrence is followed, so a draft costs a
    dictionary lookup; it is brought up to date lazily, only for positions that have a
    continuation (never the sequence's own last n-gram).
    """

    def __init__(self, tokens: list[int], max_length: int = 8, max_ngram: int = MAX_NGRAM) -> None:
        if max_ngram < 1 or max_length < 1:
            raise ValueError(
                f"max_ngram and max_length must be >= 1, got {max_ngram} and {max_length}"
            )
        self.tokens = list(tokens)
        self.max_ngram = max_ngram
        self.max_length = max_length
        self.length = max_length
        """How many tokens to draft next: grows by 2 after a fully accepted draft, shrinks by
        1 after a rejection (transformers' heuristic for assisted generation), so a row whose
        drafts keep failing costs one extra position a step."""
        self._index: dict[tuple[int, ...], int] = {}
        self._indexed = 0  # n-grams ending before this position are in the index

    def update_length(self, all_accepted: bool) -> None:
        """Adapt :attr:`length` to whether the last draft was accepted whole."""
        step = 2 if all_accepted else -1
        self.length = min(self.max_length, max(1, self.length + step))

    def extend(self, tokens: list[int]) -> None:
        """Append tokens to the sequence."""
        self.tokens.extend(tokens)

    def draft(self, limit: int) -> list[int]:
        """Up to ``limit`` tokens predicted to follow the sequence (``[]``: no match)."""
        tokens = self.tokens
        if limit < 1 or not tokens:
            return []
        last = len(tokens) - 1
        for end in range(self._indexed, last):  # n-grams ending at ``end`` continue at end + 1
            for n in range(1, min(self.max_ngram, end + 1) + 1):
                self._index[tuple(tokens[end - n + 1 : end + 1])] = end + 1
        self._indexed = max(self._indexed, last)
        drafted: list[int] = []
        while len(drafted) < limit:  # a short continuation (a loop) is looked up again
            tail = (tokens[-self.max_ngram :] + drafted)[-self.max_ngram :]
            more = self._continuation(tail, limit - len(drafted))
            if not more:
                break
            drafted += more
        return drafted

    def _continuation(self, tail: list[int], limit: int) -> list[int]:
        for n in range(len(tail), 0, -1):
            start = self._index.get(tuple(tail[-n:]))
            if start is not None:
                return self.tokens[start : start + limit]
        return []


def accept(
    logprobs: torch.Tensor, drafts: list[list[int]], greedy: bool
) -> tuple[list[list[int]], list[list[float]]]:
    """The tokens each row emits after one pass over its pending token and its draft.

    ``logprobs[r, j]`` (``[rows, 1 + max draft, vocab]``, warped and normalised; ``-inf`` for
    excluded tokens) is the policy's distribution after the row's ``j``-th input (the pending
    token, then the draft). Row ``r`` emits its accepted drafted tokens and one more: the
    correction at the first rejection, or the next token after a fully accepted draft. Returns
    each row's tokens and their log-probs under the policy.
    """
    import torch

    rows = logprobs.shape[0]
    lengths = [len(d) for d in drafts]
    width = max(lengths, default=0)
    padded = torch.tensor([d + [0] * (width - len(d)) for d in drafts], dtype=torch.long)
    padded = padded.to(logprobs.device).view(rows, width)
    drafted = logprobs[:, :width].gather(2, padded[:, :, None]).squeeze(2)  # [rows, width]
    if greedy:
        kept = logprobs[:, :width].argmax(dim=-1) == padded
    else:
        kept = torch.rand(drafted.shape, dtype=torch.float64, device=logprobs.device) < (
            drafted.double().exp()
        )
    kept_list, drafted_list = kept.tolist(), drafted.tolist()
    accepted = []
    for row, length in enumerate(lengths):
        count = 0
        while count < length and kept_list[row][count]:
            count += 1
        accepted.append(count)
    index = torch.tensor(accepted, device=logprobs.device)
    final = logprobs[torch.arange(rows, device=logprobs.device), index].clone()  # [rows, vocab]
    if not greedy:  # at a rejection the drafted token is excluded (speculative sampling)
        for row, count in enumerate(accepted):
            if count < lengths[row]:
                final[row, drafts[row][count]] = float("-inf")
        last = draw(final)
    else:
        last = final.argmax(dim=-1)
    last_logprobs = logprobs[torch.arange(rows, device=logprobs.device), index]
    last_logprobs = last_logprobs.gather(1, last[:, None]).squeeze(1).tolist()
    tokens, token_logprobs = [], []
    for row, count in enumerate(accepted):
        tokens.append([*drafts[row][:count], int(last[row])])
        token_logprobs.append([*drafted_list[row][:count], last_logprobs[row]])
    return tokens, token_logprobs
