"""Policy backends: batched generation returning token ids and sampling log-probs.

A backend takes prompts as token-id lists (the runner assembles conversations in ids) and
returns, for each prompt, the new token ids and the log-probability of each sampled token under
the distribution it was sampled from (after temperature and top-p), which is what GRPO's
importance ratios need.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


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
    """What :class:`EpisodeRunner` needs from a backend."""

    tokenizer: PreTrainedTokenizerBase

    def generate(
        self, prompts: list[list[int]], sampling: SamplingParams, seed: int | None = None
    ) -> list[Generation]:
        """Sample one continuation per prompt, stopping at the tokenizer's eos token."""
        ...


def split_generation(
    ids: list[int],
    logprobs: list[float],
    stop_id: int,
    tokenizer: Any = None,
    stop_strings: tuple[str, ...] = (),
) -> Generation:
    """Cut a raw continuation after the first ``stop_id`` or the token completing a stop
    string, whichever comes first (anything after it is batch padding)."""
    if stop_strings:
        text = ""
        for end, token in enumerate(ids, start=1):
            if token == stop_id:
                break
            text += tokenizer.decode([token])
            if any(s in text for s in stop_strings):
                return Generation(ids[:end], logprobs[:end], "stop")
    if stop_id in ids:
        end = ids.index(stop_id) + 1
        return Generation(ids[:end], logprobs[:end], "eos")
    return Generation(ids, logprobs, "length")


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
    """Batched sampling with transformers ``generate`` (left padding, one call per turn).

    The model is used by reference: weight updates made by a trainer between calls are seen by
    the next call. ``max_batch_size`` splits large batches to bound memory.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch_size: int = 64,
    ) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("HFPolicy needs a tokenizer with an eos token (the end-of-turn token)")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )

    def generate(
        self, prompts: list[list[int]], sampling: SamplingParams, seed: int | None = None
    ) -> list[Generation]:
        """One continuation per prompt (see :class:`Policy`)."""
        import torch

        out: list[Generation] = []
        device = self.model.device
        rng_devices = [device] if device.type == "cuda" else []
        with (
            torch.random.fork_rng(devices=rng_devices),
            _eval_mode(self.model),
            torch.inference_mode(),
        ):
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, len(prompts), self.max_batch_size):
                out += self._generate_batch(prompts[start : start + self.max_batch_size], sampling)
        return out

    def _generate_batch(
        self, prompts: list[list[int]], sampling: SamplingParams
    ) -> list[Generation]:
        import torch
        from transformers import (
            GenerationConfig,
            LogitsProcessorList,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        width = max(len(p) for p in prompts)
        input_ids = torch.tensor(
            [[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.model.device
        )
        attention_mask = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.model.device
        )
        greedy = sampling.temperature == 0
        processors: list[Any] = []
        if not greedy:
            processors.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_k:
                processors.append(TopKLogitsWarper(sampling.top_k))
            if sampling.top_p < 1.0:
                processors.append(TopPLogitsWarper(sampling.top_p))
        recorder = _LogprobRecorder()
        processors.append(recorder)
        # A fresh config: the model's own generation_config (top_k=50, repetition penalty...)
        # would add warpers outside our control and falsify the recorded log-probs.
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=not greedy,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.pad_id,
            stop_strings=list(sampling.stop_strings) or None,
        )
        sequences = self.model.generate(
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


@contextlib.contextmanager
def _eval_mode(model: Any):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
