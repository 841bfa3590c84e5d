"""The plain-transformers sampling engine (:class:`HFPolicy`): batched generation with a
prefix key/value cache, returning token ids and sampling log-probs (see
:mod:`~tau2.continual_learning.rollout.engines.base`)."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from tau2.continual_learning.memory import release_memory
from tau2.continual_learning.model_signature import cache_keyword, supports_prefix_cache
from tau2.continual_learning.rollout.engines.attention import sampling_attention
from tau2.continual_learning.rollout.engines.base import (
    Generation,
    SamplingParams,
    split_generation,
    turn_end,
)
from tau2.continual_learning.rollout.engines.batched_prefill import (
    PACK_TOKENS,
    PrefillLayout,
    packs,
    shared_prefixes,
)
from tau2.continual_learning.rollout.engines.prefix_cache import CachedSequence, PrefixCache
from tau2.continual_learning.rollout.engines.prompt_lookup import PromptLookup, accept
from tau2.continual_learning.rollout.engines.weights import (
    MergedModel,
    autocast_dtype,
    weights_version,
)
from tau2.continual_learning.rollout.prompt import pad_token_id
from tau2.continual_learning.sampling_defaults import LOOKUP_TOKENS

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tau2.continual_learning.rollout.engines.kv_buffer import Past

logger = logging.getLogger(__name__)

LOOKUP_BATCH_TOKENS = 64
"""Drafted tokens a decode step may score in all rows together: every scored position adds to a
pass's cost, so large batches draft little."""


class _LogprobRecorder:
    """Logits processor placed last: keeps the final (sampling) distribution of each step.

    At step ``t`` the newest column of ``input_ids`` is the token sampled at ``t - 1``, so the
    previous step's log-softmax is gathered then; only one step's distribution is held.
    """

    def __init__(self) -> None:
        self.previous: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._gather(input_ids[:, -1])
        self.previous = scores.float().log_softmax(dim=-1)
        return scores

    def _gather(self, tokens: torch.Tensor) -> None:
        if self.previous is not None:
            self.steps.append(self.previous.gather(1, tokens[:, None]).squeeze(1))
            self.previous = None

    def finish(self, sequences: torch.Tensor, num_new: int) -> list[list[float]]:
        if len(self.steps) < num_new:
            self._gather(sequences[:, -1])
        import torch

        stacked = (
            torch.stack(self.steps[:num_new], dim=1)
            if num_new
            else sequences.new_zeros((sequences.shape[0], 0)).float()
        )
        return stacked.cpu().tolist()


class HFPolicy:
    """Batched sampling with a transformers causal LM, one call per turn.

    With ``prefix_cache`` (for models with plain per-layer key/value caches; ``None``, the
    default, turns it on on a CPU and off on an accelerator, where it is slower) the
    attention keys/values of earlier turns are kept between calls
    (:mod:`~tau2.continual_learning.rollout.engines.prefix_cache`): each prompt encodes only the tokens
    no stored sequence shares with it, then all prompts decode together in one left-padded batch.
    Without it every call is a stateless left-padded ``generate`` over the whole contexts.

    The model is used by reference: weight updates made by a trainer between calls are seen by
    the next call (they invalidate the cache). ``max_batch_size`` splits large batches to bound
    memory; ``prefix_cache_tokens`` bounds the cache (least recently used sequences go first).
    ``prefill_pack_tokens`` sizes the cached path's prefill passes (rows x longest new part);
    ``None`` picks :data:`~tau2.continual_learning.rollout.engines.batched_prefill.PACK_TOKENS` on a
    CPU (the fastest size there) and 32768 on an accelerator, where larger passes pay.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch_size: int = 64,
        prefix_cache: bool | None = None,
        prefix_cache_tokens: int = 65536,
        prefill_pack_tokens: int | None = None,
        lookup_tokens: int = LOOKUP_TOKENS,
        lookup_batch_tokens: int = LOOKUP_BATCH_TOKENS,
    ) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("HFPolicy needs a tokenizer with an eos token (the end-of-turn token)")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if prefix_cache is None:
            # the cached path's per-row bookkeeping costs more than the prefill it saves where
            # forward passes are cheap (docs/results.md, "On a GPU")
            prefix_cache = model.device.type == "cpu"
        if prefill_pack_tokens is None:
            prefill_pack_tokens = PACK_TOKENS if model.device.type == "cpu" else 32768
        if prefill_pack_tokens < 1:
            raise ValueError(f"prefill_pack_tokens must be >= 1, got {prefill_pack_tokens}")
        if lookup_tokens < 0 or lookup_batch_tokens < 1:
            raise ValueError(
                "lookup_tokens must be >= 0 and lookup_batch_tokens >= 1, got "
                f"{lookup_tokens} and {lookup_batch_tokens}"
            )
        self.prefill_pack_tokens = prefill_pack_tokens
        self.lookup_tokens = lookup_tokens
        self.lookup_batch_tokens = lookup_batch_tokens
        self.model = model
        self.merged = MergedModel(model)
        """What forward passes run on: ``model`` itself, or for a LoRA model a copy with the
        adapters merged in, reloaded after every weight change."""
        self._forward: Any = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.pad_id = pad_token_id(tokenizer)
        self._cache_kwarg = cache_keyword(model)
        self.cache: PrefixCache | None = None
        if prefix_cache:
            if supports_prefix_cache(model):
                self.cache = PrefixCache(prefix_cache_tokens)
                from tau2.continual_learning.rollout.engines.kv_buffer import Workspace

                self._num_layers = _num_cache_layers(model)
                self._workspace = Workspace()
            else:
                logger.info(
                    "%s has non-standard attention caches; HFPolicy re-encodes every context",
                    type(model).__name__,
                )

    def clear_cache(self) -> None:
        """Free the prefix cache, the key/value workspace and a LoRA model's merged copy, and
        hand the freed memory back to the system (:func:`release_memory`; dropped references,
        no garbage collection): the runner calls this when a run ends, so none of it holds
        memory during training steps."""
        self.merged.release()
        self._forward = self.model
        if self.cache is not None:
            self.cache.clear()
            self._workspace.clear()
        release_memory(collect=False)

    def generate(
        self, prompts: list[list[int]], sampling: SamplingParams, seed: int | None = None
    ) -> list[Generation]:
        """One continuation per prompt (see :class:`Policy`)."""
        import torch

        if any(len(p) == 0 for p in prompts):
            raise ValueError("HFPolicy.generate: every prompt needs at least one token")
        out: list[Generation] = []
        device = self.model.device
        rng_devices = [device] if device.type == "cuda" else []
        self._forward = forward = self.merged.current()
        # no_grad, not inference_mode: under inference_mode autocast re-casts every weight on
        # every forward (its weight cache is bypassed), a third of a CPU decode step.
        with (
            torch.random.fork_rng(devices=rng_devices),
            _eval_mode(forward),
            sampling_attention(forward),
            torch.no_grad(),
        ):
            if seed is not None:
                torch.manual_seed(seed)
            if self.cache is not None:
                self.cache.validate(self._fingerprint())
            batch = self._generate_cached if self.cache is not None else self._generate_batch
            for start in range(0, len(prompts), self.max_batch_size):
                out += batch(prompts[start : start + self.max_batch_size], sampling)
        return out

    def _fingerprint(self) -> tuple[Any, ...]:
        """Changes whenever cached keys/values stop being valid: any in-place parameter update
        (optimizer step, ``load_state_dict``) bumps a version counter; autocast changes dtypes."""
        return weights_version(self.model), autocast_dtype(self.model.device.type)

    # -- stateless path ---------------------------------------------------------------------
    def _generate_batch(
        self, prompts: list[list[int]], sampling: SamplingParams
    ) -> list[Generation]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        width = max(len(p) for p in prompts)
        input_ids = torch.tensor(
            [[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.model.device
        )
        attention_mask = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.model.device
        )
        recorder = _LogprobRecorder()
        processors = [*_warpers(sampling), recorder]
        # A fresh config: the model's own generation_config (top_k=50, repetition penalty...)
        # would add warpers outside our control and falsify the recorded log-probs.
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=sampling.temperature > 0,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.pad_id,
            stop_strings=list(sampling.stop_strings) or None,
        )
        sequences = self._forward.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=config,
            logits_processor=LogitsProcessorList(processors),
            tokenizer=self.tokenizer,  # used by stop strings only
        )
        new = sequences[:, width:]
        logprobs = recorder.finish(sequences, new.shape[1])
        return [
            split_generation(
                ids, lps, self.tokenizer.eos_token_id, self.tokenizer, sampling.stop_strings
            )
            for ids, lps in zip(new.cpu().tolist(), logprobs, strict=True)
        ]

    # -- prefix-cached path -----------------------------------------------------------------
    def _encode(
        self, sequences: list[list[int]], room: int
    ) -> tuple[Any, list[int], list[list[int]], Any]:
        """Encode what the prefix cache lacks of each sequence, in packs (see
        :mod:`~tau2.continual_learning.rollout.engines.batched_prefill`), into one batch cache with
        ``room`` free columns. Returns the cache, the sequence index of each of its rows, each
        sequence's columns in it, and the last logits of each row."""
        import torch

        from tau2.continual_learning.rollout.engines.kv_buffer import BatchBuffers

        assert self.cache is not None
        found = [self.cache.lookup(s) for s in sequences]
        # the last position's logits are needed, so each row encodes at least one token
        reuse = [min(shared, len(s) - 1) for s, (_, shared) in zip(sequences, found, strict=True)]
        suffixes = [len(s) - r for s, r in zip(sequences, reuse, strict=True)]
        groups = packs(suffixes, self.prefill_pack_tokens)
        layouts = [PrefillLayout([sequences[i] for i in g], [reuse[i] for i in g]) for g in groups]
        width = max(layout.width for layout in layouts)
        buffers = BatchBuffers(len(sequences), width, room, self._num_layers, self._workspace)
        columns: list[list[int]] = [[] for _ in sequences]
        logits, first = [], 0
        device = self.model.device
        for group, layout in zip(groups, layouts, strict=True):
            start = width - layout.width  # every pack ends in the last column
            cache = buffers.pack_cache(
                slice(first, first + len(group)),
                start,
                [_head(found[i][0], reuse[i]) for i in group],
                layout.past_width,
            )
            output = self._forward(
                input_ids=torch.tensor(layout.suffix_ids(self.pad_id), device=device),
                attention_mask=torch.tensor(layout.attention_mask(), device=device),
                position_ids=torch.tensor(layout.position_ids(), device=device),
                **{self._cache_kwarg: cache},
                use_cache=True,
                logits_to_keep=1,
            )
            logits.append(output.logits[:, -1])
            for row, i in enumerate(group):
                columns[i] = [start + c for c in layout.columns(row)]
            first += len(group)
        self.cache.stats.reused_tokens += sum(reuse)
        self.cache.stats.prefill_tokens += sum(suffixes)
        order = [i for group in groups for i in group]
        return buffers.cache(), order, columns, torch.cat(logits)

    def _store(self, cache: Any, row: int, tokens: list[int], columns: list[int]) -> None:
        """Keep batch row ``row`` (the keys/values in its ``columns``) in the prefix cache: only
        what follows the longest prefix a stored sequence already holds, pointing to that one
        (:class:`CachedSequence`), unless the prefix is under half of what it would keep alive."""
        import torch

        assert self.cache is not None
        parent, shared = self.cache.lookup(tokens)
        if parent is not None:
            parent = parent.anchor(shared)
            if 2 * shared < len(parent.tokens):
                parent, shared = None, 0
        if shared >= len(tokens):
            return  # a stored sequence holds all of it
        index = torch.tensor(columns[shared:], device=self.model.device)
        self.cache.add(
            CachedSequence(
                tokens,
                [layer.keys[row : row + 1].index_select(2, index) for layer in cache.layers],
                [layer.values[row : row + 1].index_select(2, index) for layer in cache.layers],
                parent=parent,
                parent_length=shared,
            )
        )

    def _generate_cached(
        self, prompts: list[list[int]], sampling: SamplingParams
    ) -> list[Generation]:
        import torch

        assert self.cache is not None
        # prefixes several prompts share beyond the cache (a GRPO group's prompt) go first
        prefixes = shared_prefixes(prompts, [self.cache.lookup(p)[1] for p in prompts])
        if prefixes:
            shared, order, columns, _ = self._encode(prefixes, room=0)
            for row, i in enumerate(order):
                self._store(shared, row, prefixes[i], columns[i])
            del shared
        # ``active``: the prompt index of each batch row (rows are in pack order); decoding has
        # room for twice the turn's tokens, the second half for drafted tokens
        limit = sampling.max_new_tokens
        draft_room = limit if self.lookup_tokens else 0
        cache, active, columns, logits = self._encode(prompts, room=limit + draft_room)
        capacity = cache.get_seq_length() + limit + draft_room
        device = self.model.device
        mask = torch.zeros((len(prompts), cache.get_seq_length()), dtype=torch.long)
        for row, i in enumerate(active):
            mask[row, columns[i]] = 1
        mask = mask.to(device)
        positions = [len(prompts[i]) for i in active]
        warpers = _warpers(sampling)
        greedy = sampling.temperature == 0
        eos = self.tokenizer.eos_token_id
        tokens: list[list[int]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        texts = [""] * len(prompts)
        reasons = ["length"] * len(prompts)
        lookups = (
            {i: PromptLookup(prompts[i], self.lookup_tokens) for i in active}
            if self.lookup_tokens
            else {}
        )
        drafts: list[list[int]] = [[] for _ in active]
        logits, decoded = logits[:, None], False  # the prefill's last logits come first
        while True:
            scores = logits.float()  # [rows, 1 + longest draft, vocab]
            for warper in warpers:
                scores = warper(None, scores.flatten(0, 1)).view(scores.shape)
            emitted, emitted_logprobs = accept(scores.log_softmax(dim=-1), drafts, greedy)
            keep = []
            start = cache.get_seq_length() - logits.shape[1]  # the column of each pending token
            for row, index in enumerate(active):
                if decoded:  # the pending token and the accepted draft are now encoded
                    accepted = len(emitted[row]) - 1
                    if drafts[row]:
                        lookups[index].update_length(accepted == len(drafts[row]))
                    mask[row, start + 1 + accepted :] = 0  # rejected drafts and padding
                    columns[index] += list(range(start, start + 1 + accepted))
                    positions[row] += 1 + accepted
                for token, logprob in zip(emitted[row], emitted_logprobs[row], strict=True):
                    tokens[index].append(token)
                    logprobs[index].append(logprob)
                    reason, texts[index] = turn_end(
                        token, texts[index], eos, self.tokenizer, sampling.stop_strings
                    )
                    reasons[index] = reason or "length"
                    if reason is not None or len(tokens[index]) == limit:
                        break
                else:
                    keep.append(row)
                    continue
                # finished: keep what was encoded of it
                encoded = min(len(tokens[index]), len(columns[index]) - len(prompts[index]))
                self._store(cache, row, prompts[index] + tokens[index][:encoded], columns[index])
            if not keep:
                break
            if len(keep) < len(active):
                selected = torch.tensor(keep, device=device)
                cache.batch_select_indices(selected)
                mask = mask[selected]
                positions = [positions[row] for row in keep]
                active = [active[row] for row in keep]
            # drafts: as long as each row's record, the step's budget, the turn's limit and
            # the room allow
            used = cache.get_seq_length()
            need = max(limit - len(tokens[i]) for i in active)
            budget = min((capacity - used) - need, self.lookup_batch_tokens // len(active))
            drafts = []
            for i in active:
                lookup = lookups.get(i)
                if lookup is None or budget < 1:
                    drafts.append([])
                    continue
                lookup.extend(tokens[i][len(lookup.tokens) - len(prompts[i]) :])
                drafts.append(lookup.draft(min(budget, lookup.length, limit - len(tokens[i]))))
            width = 1 + max(len(d) for d in drafts)
            step_ids = [
                [tokens[i][-1], *d] + [self.pad_id] * (width - 1 - len(d))
                for i, d in zip(active, drafts, strict=True)
            ]
            step_mask = [[1] * (1 + len(d)) + [0] * (width - 1 - len(d)) for d in drafts]
            mask = torch.cat([mask, torch.tensor(step_mask, device=device)], dim=1)
            output = self._forward(
                input_ids=torch.tensor(step_ids, device=device),
                attention_mask=mask,
                position_ids=torch.tensor(
                    [[p + j for j in range(width)] for p in positions], device=device
                ),
                **{self._cache_kwarg: cache},
                use_cache=True,
            )
            logits, decoded = output.logits, True
        return [Generation(tokens[i], logprobs[i], reasons[i]) for i in range(len(prompts))]


def _head(entry: CachedSequence | None, length: int) -> list[Past]:
    """The keys/values of ``entry``'s first ``length`` tokens, in pieces (none if none)."""
    if entry is None or length == 0:
        return []
    return entry.segments(length)


def _num_cache_layers(model: Any) -> int:
    from transformers import DynamicCache

    return len(DynamicCache(config=model.config).layers)


def _warpers(sampling: SamplingParams) -> list[Any]:
    """Temperature, top-k and top-p as transformers logits warpers (none when greedy)."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    if sampling.temperature == 0:
        return []
    warpers: list[Any] = [TemperatureLogitsWarper(sampling.temperature)]
    if sampling.top_k:
        warpers.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1.0:
        warpers.append(TopPLogitsWarper(sampling.top_p))
    return warpers


@contextlib.contextmanager
def _eval_mode(model: Any):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
