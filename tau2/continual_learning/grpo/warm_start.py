"""Supervised warm start per domain: a few supervised epochs on gold demonstrations before a
domain's GRPO steps, so that a weak policy succeeds often enough for GRPO groups to carry signal.

**Demonstrations** (:func:`gold_demonstrations`). A domain's train tasks carry gold actions; they
are replayed through the episode runner's scripted path (``rollout/scripted.py``'s
:func:`replay_gold`), so parsing, tool calls, token assembly and scoring are the production code
and every demonstration is, token for token, what the policy would write in our format
(``env_mask`` marks those tokens). tau2's evaluators
score each one; only reward 1.0 is kept, and demonstrations longer than ``max_context_tokens``
are dropped (both counted and logged). Turns and tokens per turn are not capped by the rollout
limits: a demonstration may be longer than what an episode of the run allows, which still teaches
the call format.

**Supervised steps** (:func:`supervised_steps`): next-token cross-entropy on ``prompt_ids +
completion_ids`` with labels ``-100`` on prompt tokens and on ``env_mask == 0`` tokens (tool
responses, user turns, template tokens), averaged over the model-written tokens of a batch;
AdamW at a constant learning rate, a fresh optimizer per warm start (the GRPO optimizer is not
touched), gradient clipping at ``max_grad_norm``, bf16 autocast when ``config.bf16``.

Why our own loop and not TRL's ``SFTTrainer`` (1.16, which does take pre-tokenized
``input_ids`` with ``assistant_masks``): it always patches the model's ``forward`` with its fused
LM head and computes the loss through it, which on devices without Triton (the CPU default job)
scores every position in chunks, slower per step than a plain loss (docs/results.md, "Warm start
settings"). It also leaves state on the shared model and tokenizer (a further
``forward`` wrapper per construction, ``pad_token`` and the configs' ``pad_token_id``), reseeds the
global RNGs (``set_seed`` in ``Trainer.__init__``), and brings nothing the warm start needs
(packing, PEFT wrapping, dataset preparation). The loop here computes logits only at the positions
whose next token is trained (``logits_to_keep``), which also keeps the ``(tokens x vocab)`` logits
out of memory, and leaves the model as it found it except for its weights.

Determinism: the task choice, the replay draw and the batch order are seeded from
``config.seed`` and the domain's index, and building demonstrations leaves the global RNGs as
they were (a run resumed from a checkpoint rebuilds the earlier domains' demonstrations for replay
and continues like the uninterrupted run). Under torchrun every rank runs the same warm start
(same demonstrations, same order), so the weights stay identical without gradient exchange.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from tau2.continual_learning.cl_algorithm import CLAlgorithm
from tau2.continual_learning.grpo.checkpointing import rng_state, set_rng_state
from tau2.continual_learning.grpo.seeds import Seeds, WarmStartDraw
from tau2.continual_learning.grpo.token_batch import bf16_autocast, right_padded
from tau2.continual_learning.memory import release_memory
from tau2.continual_learning.model_signature import forward_parameters
from tau2.continual_learning.rollout import CALL_PREFIX, Episode
from tau2.continual_learning.rollout.prompt import pad_token_id
from tau2.continual_learning.rollout.scripted import replay_gold

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from tau2.continual_learning.grpo.config import GRPOConfig
    from tau2.continual_learning.rollout import DomainTask

logger = logging.getLogger(__name__)

__all__ = [
    "DemonstrationSet",
    "SupervisedResult",
    "WarmStart",
    "build_batch",
    "gold_demonstrations",
    "masked_token_loss",
    "mean_model_token_logprob",
    "supervised_steps",
]

IGNORE_INDEX = -100
"""Label of tokens that are not trained (PyTorch's cross-entropy ``ignore_index``)."""


# -- demonstrations ------------------------------------------------------------------------------
@dataclass
class DemonstrationSet:
    """Gold episodes that scored 1.0 and fit the context, and what was left out."""

    episodes: list[Episode]
    failed: list[str] = field(default_factory=list)
    """Keys of tasks whose gold replay scored below 1.0 (or ended early)."""
    too_long: list[str] = field(default_factory=list)
    """Keys of tasks whose demonstration is longer than ``max_context_tokens``."""

    @property
    def dropped(self) -> int:
        return len(self.failed) + len(self.too_long)


def gold_demonstrations(
    tasks: Sequence[DomainTask],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_context_tokens: int,
    assistant_prefix: str = CALL_PREFIX,
    max_tool_response_chars: int | None = None,
) -> DemonstrationSet:
    """Replay the gold actions of ``tasks`` through the episode runner and keep the episodes
    that tau2's evaluators score 1.0 and that fit in ``max_context_tokens`` (in task order).
    Tool responses are shown as the run's episodes show them (``max_tool_response_chars``)."""
    episodes: list[Episode] = []
    failed: list[str] = []
    too_long: list[str] = []
    for episode in replay_gold(
        tasks,
        tokenizer,
        assistant_prefix=assistant_prefix,
        max_tool_response_chars=max_tool_response_chars,
    ):
        if episode.reward != 1.0 or not episode.num_model_tokens:
            failed.append(episode.key)
        elif len(episode.prompt_ids) + len(episode.completion_ids) > max_context_tokens:
            too_long.append(episode.key)
        else:
            episodes.append(episode)
    return DemonstrationSet(episodes, failed, too_long)


# -- supervised steps ----------------------------------------------------------------------------
def build_batch(episodes: Sequence[Episode], pad_token_id: int) -> dict[str, torch.Tensor]:
    """``input_ids`` (``prompt_ids + completion_ids``, right-padded), ``attention_mask`` and
    ``labels``: the token where the model wrote it (``env_mask == 1``), else ``-100``."""
    batch = right_padded(episodes, pad_token_id)
    labels = torch.where(batch.model_written, batch.input_ids, IGNORE_INDEX)
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": labels}


def _accepts_logits_to_keep(model: Any) -> bool:
    return "logits_to_keep" in forward_parameters(model)


def masked_token_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed next-token negative log-likelihood of the labelled tokens, and their count.

    Logits are computed only at positions whose next token is labelled (where the model accepts
    ``logits_to_keep``). A batch without labelled tokens gives a zero connected to the graph
    (zero gradients)."""
    device = next(model.parameters()).device
    input_ids = batch["input_ids"].to(device)
    targets = batch["labels"][:, 1:].to(device)
    trained = targets != IGNORE_INDEX
    count = int(trained.sum())
    positions = trained.any(dim=0).nonzero().flatten()
    kwargs: dict[str, Any] = {"attention_mask": batch["attention_mask"].to(device)}
    if _accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = positions if count else 1
        logits = model(input_ids=input_ids, use_cache=False, **kwargs).logits
        targets = targets[:, positions]
    else:
        logits = model(input_ids=input_ids, use_cache=False, **kwargs).logits[:, :-1]
    if not count:
        return logits.sum() * 0.0, 0
    loss = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss, count


def mean_model_token_logprob(
    model: Any, episodes: Sequence[Episode], pad_token_id: int, *, bf16: bool = False
) -> float:
    """Mean log-probability the model gives the model-written tokens of ``episodes``
    (a diagnostic: a warm start should raise it)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), bf16_autocast(model, bf16):
        for episode in episodes:
            loss, n = masked_token_loss(model, build_batch([episode], pad_token_id))
            total, count = total + float(loss), count + n
    model.train(was_training)
    return -total / max(count, 1)


@dataclass
class SupervisedResult:
    """What :func:`supervised_steps` did."""

    epoch_losses: list[float]
    """Mean loss per model-written token of each epoch (measured before each batch's update)."""
    steps: int
    tokens_trained: int
    """Model-written tokens trained on, over all epochs."""
    skipped_steps: int
    """Updates skipped because their loss was not finite."""


@contextlib.contextmanager
def checkpointed(model: Any, on: bool = True) -> Iterator[None]:
    """Per-layer activation checkpointing for the block where ``on`` (transformers' own,
    non-reentrant, as TRL's trainer turns it on for the GRPO steps under
    ``activation_checkpointing``): a backward pass holds each layer's input instead of all its
    activations, for one more forward pass. The model's own setting is restored after."""
    if not on or getattr(model, "is_gradient_checkpointing", False):
        yield
        return
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        yield
    finally:
        model.gradient_checkpointing_disable()


def supervised_steps(
    model: Any,
    episodes: Sequence[Episode],
    *,
    pad_token_id: int,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    bf16: bool = False,
    max_grad_norm: float = 1.0,
    weight_decay: float = 0.0,
    on_epoch: Callable[[int, float], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    activation_checkpointing: bool = False,
) -> SupervisedResult:
    """``epochs`` passes over ``episodes`` in seeded random order, ``batch_size`` episodes per
    AdamW step (constant ``learning_rate``) on the model-written tokens only. ``optimizer``
    continues one across calls (supervised training driven in chunks); ``None``: a fresh AdamW
    over the trainable parameters. ``activation_checkpointing``: keep only each layer's input
    for the backward pass and recompute the rest (:func:`checkpointed`)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.train()
    losses: list[float] = []
    steps = tokens = skipped = 0
    try:
        with checkpointed(model, activation_checkpointing):
            for epoch in range(epochs):
                order = torch.randperm(len(episodes), generator=generator).tolist()
                epoch_loss, epoch_tokens = 0.0, 0
                for start in range(0, len(order), batch_size):
                    batch = build_batch(
                        [episodes[i] for i in order[start : start + batch_size]], pad_token_id
                    )
                    with bf16_autocast(model, bf16):
                        loss_sum, count = masked_token_loss(model, batch)
                    if not count:
                        continue
                    loss = loss_sum / count
                    if not torch.isfinite(loss):
                        skipped += 1
                        logger.warning(
                            "Warm start: non-finite loss %s, update skipped", loss.item()
                        )
                        continue
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if max_grad_norm and max_grad_norm > 0:
                        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                    optimizer.step()
                    steps += 1
                    epoch_loss += float(loss_sum.detach())
                    epoch_tokens += count
                tokens += epoch_tokens
                losses.append(epoch_loss / epoch_tokens if epoch_tokens else math.nan)
                if on_epoch is not None:
                    on_epoch(epoch, losses[-1])
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.train(was_training)
        release_memory()  # the backward passes' freed activations, before the next phase
    return SupervisedResult(losses, steps, tokens, skipped)


# -- the per-domain warm start -------------------------------------------------------------------
@contextlib.contextmanager
def _global_rng_preserved() -> Iterator[None]:
    """Leave Python's, NumPy's and torch's global RNG states as they were."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class WarmStart:
    """The warm start of a run: demonstrations per domain (cached within the run per domain,
    split, seed and tokenizer) and :meth:`run`, called by the trainer before a domain's GRPO
    steps."""

    def __init__(
        self, config: GRPOConfig, tokenizer: PreTrainedTokenizerBase, max_context_tokens: int
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.max_context_tokens = max_context_tokens
        """The run's episode context limit (``Rollouts.max_context_tokens``): longer
        demonstrations are dropped."""
        self.seeds = Seeds(config.seed)
        self._cache: dict[tuple[Any, ...], DemonstrationSet] = {}

    def applies_to(self, domain: str) -> bool:
        """Whether ``domain`` gets a warm start: demonstrations are on
        (``warm_start_demos_per_domain > 0``) and ``domain`` is among ``warm_start_domains``
        (``None``: every domain). The others learn from the evaluator's reward alone."""
        cfg = self.config
        chosen = cfg.warm_start_domains
        return cfg.warm_start_demos_per_domain > 0 and (chosen is None or domain in chosen)

    def _seed(self, domain: str, draw: WarmStartDraw) -> int:
        return self.seeds.warm_start(list(self.config.domains).index(domain), draw)

    def demonstrations(self, domain: str, tasks: Sequence[DomainTask]) -> DemonstrationSet:
        """Gold demonstrations of ``warm_start_demos_per_domain`` of ``domain``'s train
        ``tasks``, chosen with a seeded shuffle; the failed and over-long ones are dropped."""
        cfg = self.config
        tok = self.tokenizer
        key = (
            domain,
            "train",
            cfg.seed,
            getattr(tok, "name_or_path", ""),
            len(tok),
            cfg.warm_start_demos_per_domain,
            self.max_context_tokens,
            cfg.max_tool_response_chars,
            cfg.assistant_prefix,
        )
        if key not in self._cache:
            chosen = list(tasks)
            random.Random(self._seed(domain, WarmStartDraw.DEMONSTRATIONS)).shuffle(chosen)
            chosen = chosen[: cfg.warm_start_demos_per_domain]
            prefix = cfg.assistant_prefix
            with _global_rng_preserved():  # built now or later (a resume): same RNG afterwards
                demos = gold_demonstrations(
                    chosen,
                    tok,
                    max_context_tokens=self.max_context_tokens,
                    assistant_prefix=prefix,
                    max_tool_response_chars=cfg.max_tool_response_chars or None,
                )
            logger.info(
                "Warm start %s: %d demonstrations of %d tasks; dropped %d (%d scored below 1.0, "
                "%d longer than max_context_tokens=%d)",
                domain,
                len(demos.episodes),
                len(chosen),
                demos.dropped,
                len(demos.failed),
                len(demos.too_long),
                self.max_context_tokens,
            )
            self._cache[key] = demos
        return self._cache[key]

    def replayed(
        self,
        domain: str,
        num_new: int,
        cl_algorithm: CLAlgorithm,
        tasks_of: Callable[[str], Sequence[DomainTask]],
    ) -> list[Episode]:
        """Earlier domains' demonstrations to mix into ``domain``'s warm start of ``num_new``
        demonstrations: as many per domain as the algorithm's
        :meth:`~tau2.continual_learning.cl_algorithm.CLAlgorithm.warm_start_replay` asks for,
        drawn from each domain's demonstrations (seeded). Domains learned from reward alone
        (not :meth:`applies_to`) have no demonstrations to replay."""
        rng = random.Random(self._seed(domain, WarmStartDraw.REPLAY))
        wanted = cl_algorithm.warm_start_replay(domain, num_new, rng) if num_new else {}
        wanted = {old: n for old, n in wanted.items() if self.applies_to(old)}
        replay: list[Episode] = []
        for old, share in wanted.items():
            pool = self.demonstrations(old, tasks_of(old)).episodes
            replay += rng.sample(pool, min(share, len(pool)))
        if len(replay) < sum(wanted.values()):
            logger.info(
                "Warm start %s: %d of %d replayed demonstrations available",
                domain,
                len(replay),
                sum(wanted.values()),
            )
        return replay

    def run(
        self,
        model: Any,
        domain: str,
        tasks_of: Callable[[str], Sequence[DomainTask]],
        cl_algorithm: CLAlgorithm,
        learning_rate: float | None = None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Warm-start ``model`` on ``domain`` (plus replayed demonstrations) at
        ``learning_rate`` (default ``warm_start_learning_rate``); returns the domain's
        statistics and one log row per epoch."""
        cfg = self.config
        rate = cfg.warm_start_learning_rate if learning_rate is None else learning_rate
        start = time.perf_counter()
        demos = self.demonstrations(domain, tasks_of(domain))
        replay = self.replayed(domain, len(demos.episodes), cl_algorithm, tasks_of)
        episodes = demos.episodes + replay
        rows: list[dict[str, Any]] = []

        def on_epoch(epoch: int, loss: float) -> None:
            logger.info(
                "Warm start %s epoch %d/%d: loss %.4f (%d demonstrations, %d replayed)",
                domain,
                epoch + 1,
                cfg.warm_start_epochs,
                loss,
                len(demos.episodes),
                len(replay),
            )
            rows.append({"warm_start_epoch": epoch + 1, "warm_start_loss": loss})

        if episodes:
            result = supervised_steps(
                model,
                episodes,
                pad_token_id=pad_token_id(self.tokenizer),
                epochs=cfg.warm_start_epochs,
                learning_rate=rate,
                batch_size=cfg.warm_start_batch_size,
                seed=self._seed(domain, WarmStartDraw.ORDER),
                bf16=bool(cfg.bf16),
                max_grad_norm=cfg.max_grad_norm,
                weight_decay=cfg.weight_decay,
                on_epoch=on_epoch,
                activation_checkpointing=cfg.warm_start_activation_checkpointing,
            )
        else:
            logger.warning("Warm start %s: no demonstrations, skipped", domain)
            result = SupervisedResult([], 0, 0, 0)
        stats = {
            "demos": len(demos.episodes),
            "replayed_demos": len(replay),
            "replayed_from": sorted({e.task.domain for e in replay}),
            "dropped_failed": len(demos.failed),
            "dropped_too_long": len(demos.too_long),
            "epochs": cfg.warm_start_epochs,
            "learning_rate": rate,
            "steps": result.steps,
            "skipped_steps": result.skipped_steps,
            "tokens_trained": result.tokens_trained,
            "epoch_losses": result.epoch_losses,
            "final_loss": result.epoch_losses[-1] if result.epoch_losses else None,
            "seconds": time.perf_counter() - start,
        }
        for row in rows:
            row.update(warm_start_demos=stats["demos"], warm_start_replayed=stats["replayed_demos"])
        return stats, rows
