"""GRPO step profile: episodes trained per minute and where a step's seconds go, per configuration.

Workload: the default job's GRPO steps. The default config's first domain (or ``--domain``)
is warm-started once (default warm-start settings, under its guard), so groups carry signal;
then each configuration starts from those weights (a fresh optimizer, the same seeds, so the
same first rollouts) and runs ``--steps`` GRPO steps of the default config, one after the
other in this process. One untimed step runs first, so one-time costs of the process fall on no configuration.

Configurations (``--configs``): ``baseline`` is the step with every improvement below off; each
improvement alone; ``default`` (the library's defaults: every improvement but
``group_passes``); ``all``.

* ``group_passes``: one GRPO group per forward/backward pass (``micro_batch_size`` = the group
  size; the baseline's is the config's, 1 by default), without sharing;
* ``shared_prefix``: the shared-prefix path (``GRPOConfig.shared_prefix``; off in the baseline,
  which runs TRL's own log-prob pass). In the baseline's passes of one sequence nothing is shared
  and only the prompt positions skip the LM head; with ``group_passes`` (in ``all``) each group's
  prompt is also encoded once;
* ``scoring_cache``: the scorer's cached environment check
  (:mod:`~tau2.continual_learning.rollout.scoring`). It has no switch; the baseline scores with
  tau2's own ``EnvironmentEvaluator.calculate_reward`` in its place, which rebuilds both
  environments from disk (equal rewards, tested in tests/rollout/test_scoring_cache.py).

One JSON line per configuration (timed steps only, seconds per step):

* ``episodes_per_min``: episodes trained (rolled out, scored, in the loss) per minute of steps;
* ``rollout_s`` (sampling the episodes, scoring excluded), ``scoring_s`` (tau2's evaluators),
  ``logprob_s`` (TRL's ``_get_per_token_logps_and_entropies``: the forward passes of the
  log-probs, inside the loss and, where TRL needs them, before it), ``fwd_bwd_s`` (TRL's
  ``training_step`` without the rollout it triggers: forward, loss and backward),
  ``optimizer_s`` (``on_pre_optimizer_step`` to ``on_optimizer_step``: the optimizer's update),
  ``step_s`` (the whole step);
* ``fwd_bwd_gflops``: the FLOPs (x1e9) of the step's forward and backward passes as the unshared
  computation needs them (:func:`fwd_bwd_flops`), equal across configurations that train on the
  same episodes, so a configuration that saves work shows as a higher ``fwd_bwd_gflops_per_s``;
  micro-batches without signal (skipped by the trainer) count nothing;
* ``matmul_peak_gflops``: this machine's matmul rate at the precision the step runs in,
  measured before the configuration's steps (``torch.matmul`` of 2048 x 2048 float32 matrices,
  best of three: ``matmul_fp32_gflops``, and under bf16 autocast ``matmul_bf16_gflops`` where
  ``bf16_supported()``), and ``fwd_bwd_share_of_peak``: the forward/backward's rate over it.

``peak_rss_mb``: the process's highest resident memory during the configuration's steps.

A last line ``{"speedup": ...}``: ``all`` over ``baseline`` in episodes per minute (and
``default_speedup``: ``default`` over ``baseline``, where both ran).

    python benchmarks/grpo_step.py                        # embedded model, default config
    python benchmarks/grpo_step.py --steps 2 --configs baseline all
    python benchmarks/grpo_step.py --domain retail        # another domain's steps
    python benchmarks/grpo_step.py --quick                # tiny model, a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from _cli import add_override_argument
from transformers import TrainerCallback, set_seed

import tau2.continual_learning  # noqa: F401  (import hygiene first)
from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.grpo import trainer as trainer_module
from tau2.continual_learning.grpo.checkpointing import ResumePoint
from tau2.continual_learning.grpo.config import bf16_supported
from tau2.continual_learning.grpo.trl_trainer import DomainGRPOTrainer
from tau2.continual_learning.memory import peak_resident_mb, release_memory, reset_peak
from tau2.continual_learning.model_loading import load_tokenizer
from tau2.continual_learning.rollout import scoring
from tau2.continual_learning.tiny_model import build_tiny_model

logger = logging.getLogger("benchmarks.grpo_step")

IMPROVEMENTS = ("group_passes", "shared_prefix", "scoring_cache")
"""What the baseline switches off, each a configuration of its own."""
CONFIGS = ("baseline", *IMPROVEMENTS, "default", "all")
STEPS = 3
QUICK: dict[str, Any] = {
    "max_turns": 1,
    "max_new_tokens_per_turn": 8,
    "warm_start_demos_per_domain": 2,
    "warm_start_guard_tasks": 0,
    "num_samples_per_prompt": 2,
    "batch_size_per_gpu": 1,
}
"""``--quick``'s overrides (with the tiny model and one step per configuration)."""
RESERVED = ("domains", "output_dir", "max_steps_per_domain", "shared_prefix", "micro_batch_size")
PHASES = ("rollout_s", "scoring_s", "logprob_s", "fwd_bwd_s", "optimizer_s")


# -- the machine's matmul rate -------------------------------------------------------------------
def matmul_gflops(bf16: bool, size: int = 2048, repeats: int = 3) -> float:
    """Best-of-``repeats`` rate of one ``size x size`` float32 matmul (under bf16 autocast when
    ``bf16``), in GFLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        torch.matmul(a, b)  # warm-up (and autocast's cast)
        for _ in range(repeats):
            start = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


# -- FLOPs of the forward and backward -----------------------------------------------------------
@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count needs of a causal LM: its matmul weights and attention width."""

    body: int
    """Weights of the decoder layers' matmuls (frozen under LoRA)."""
    adapter: int
    """Trainable weights inside the layers (LoRA's A and B; 0 for full fine-tuning)."""
    head: int
    """LM head weights (vocabulary x hidden)."""
    layers: int
    attention_width: int
    """Query heads x head dim."""
    full: bool
    """Full fine-tuning (every weight trained) rather than an adapter."""

    @classmethod
    def of(cls, model: Any) -> ModelShape:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = base.config.get_text_config()
        head = base.get_output_embeddings().weight.numel()
        adapter = body = 0
        for name, param in base.model.layers.named_parameters():
            if param.dim() != 2:
                continue
            if "lora_" in name:
                adapter += param.numel()
            else:
                body += param.numel()
        full = not hasattr(model, "get_base_model")
        width = config.num_attention_heads * getattr(
            config, "head_dim", config.hidden_size // config.num_attention_heads
        )
        return cls(body, adapter, head, config.num_hidden_layers, width, full)


def fwd_bwd_flops(shape: ModelShape, rows: list[tuple[int, int]]) -> float:
    """FLOPs of the forward and backward of ``rows`` (``(prompt, completion)`` tokens each) as
    TRL's loss needs them: every row's whole sequence through the layers, the LM head at the
    completion positions.

    Forward: ``2 N T`` for the layers' matmuls (``N`` = body + adapter weights, ``T`` tokens),
    ``2 L w T^2`` for causal attention per row (scores and weighted sum, half the square each;
    ``L`` layers, ``w`` attention width), ``2 H C`` for the head (``H`` its weights, ``C``
    completion tokens). Backward, full fine-tuning: twice the forward (gradients of the
    activations and of the weights). Backward, LoRA: the activations' gradients through the
    frozen weights (``2 N_body T``, ``2 H C``), attention twice its forward, and the adapter's
    activation and weight gradients (``4 N_adapter T``)."""
    tokens = sum(p + c for p, c in rows)
    completions = sum(c for _, c in rows)
    attention = sum(2 * shape.layers * shape.attention_width * (p + c) ** 2 for p, c in rows)
    layers = 2 * (shape.body + shape.adapter) * tokens
    head = 2 * shape.head * completions
    forward = layers + attention + head
    if shape.full:
        return 3 * forward
    backward = 2 * shape.body * tokens + 4 * shape.adapter * tokens + 2 * attention + head
    return forward + backward


# -- timers around the step's phases -------------------------------------------------------------
class Timers:
    """Seconds and counts per phase, for the steps being timed (``active``)."""

    def __init__(self) -> None:
        self.active = False
        self.seconds: dict[str, float] = defaultdict(float)
        self.episodes = 0
        self.steps = 0
        self.flops = 0.0
        self._step_start = 0.0
        self._optimizer_start = 0.0

    def reset(self) -> None:
        self.seconds.clear()
        self.episodes = self.steps = 0
        self.flops = 0.0

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.active:
                self.seconds[name] += time.perf_counter() - start

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return fn(*args, **kwargs)

        return timed


class _StepCallback(TrainerCallback):
    """Step and optimizer-update boundaries from the transformers trainer's events."""

    def __init__(self, timers: Timers) -> None:
        self.timers = timers

    def on_step_begin(self, args, state, control, **kwargs):
        self.timers._step_start = time.perf_counter()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.timers._optimizer_start = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self.timers.active:
            self.timers.seconds["optimizer_s"] += time.perf_counter() - self.timers._optimizer_start

    def on_step_end(self, args, state, control, **kwargs):
        if self.timers.active:
            self.timers.seconds["step_s"] += time.perf_counter() - self.timers._step_start
            self.timers.steps += 1


def timed_trainer_class(timers: Timers, shape: ModelShape) -> type[DomainGRPOTrainer]:
    """The run's TRL trainer with timers around the rollout, the log-prob passes, the training
    step and the optimizer update, and the FLOPs of every micro-batch that is trained."""

    class TimedDomainGRPOTrainer(DomainGRPOTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            callbacks = [*(kwargs.pop("callbacks", None) or []), _StepCallback(timers)]
            super().__init__(*args, callbacks=callbacks, **kwargs)

        def training_step(self, *args: Any, **kwargs: Any) -> Any:
            with timers.phase("training_step_s"):
                return super().training_step(*args, **kwargs)

        def _generate_and_score_completions(self, *args: Any, **kwargs: Any) -> Any:
            with timers.phase("generation_s"):
                return super()._generate_and_score_completions(*args, **kwargs)

        def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> Any:
            with timers.phase("logprob_s"):
                return super()._get_per_token_logps_and_entropies(*args, **kwargs)

        def compute_loss(self, model, inputs, *args: Any, **kwargs: Any) -> Any:
            if timers.active and not self._without_signal(inputs):
                prompts = inputs["prompt_mask"].sum(1).tolist()
                completions = inputs["completion_mask"].sum(1).tolist()
                timers.flops += fwd_bwd_flops(shape, list(zip(prompts, completions, strict=True)))
            return super().compute_loss(model, inputs, *args, **kwargs)

    return TimedDomainGRPOTrainer


@contextlib.contextmanager
def patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def tau2_environment_reward(case: scoring.EnvironmentCase) -> Any:
    """tau2's own environment check of one episode (what the cached one replaces)."""
    from tau2.evaluator.evaluator_env import EnvironmentEvaluator

    from tau2.continual_learning.rollout.environments import environment_constructor

    return EnvironmentEvaluator.calculate_reward(
        environment_constructor=environment_constructor(case.domain),
        task=case.task,
        full_trajectory=case.messages,
        solo_mode=case.solo_mode,
    )


# -- the run -------------------------------------------------------------------------------------
def improvements(config_name: str) -> set[str]:
    if config_name == "all":
        return set(IMPROVEMENTS)
    if config_name == "default":
        return set(IMPROVEMENTS) - {"group_passes"}
    return {config_name} & set(IMPROVEMENTS)


def run_config(
    trainer: GRPOTrainer,
    weights: dict[str, Any],
    name: str,
    steps: int,
    timers: Timers,
    base_micro_batch_size: int,
) -> None:
    """``steps`` GRPO steps of the first domain from ``weights`` with configuration ``name``
    (the baseline's passes of ``base_micro_batch_size`` sequences)."""
    from learning_signal import load_adapter_state

    on = improvements(name)
    cfg = trainer.config
    cfg.shared_prefix = "shared_prefix" in on
    micro = cfg.num_samples_per_prompt if "group_passes" in on else base_micro_batch_size
    cfg.micro_batch_size = cfg.per_device_train_batch_size = micro  # as __post_init__ derives
    cfg.steps_per_generation = cfg.episodes_per_step // micro
    cfg.max_steps_per_domain = cfg.max_steps = steps
    load_adapter_state(trainer.model, weights)
    trainer.record.global_step = 0  # the same rollout seeds in every configuration
    trainer.optimizer = None
    scoring.environment_reward.cache_clear()
    scoring.gold_database_hashes.cache_clear()
    environment = scoring.environment_reward if "scoring_cache" in on else tau2_environment_reward
    set_seed(cfg.seed)
    with (
        patched(scoring, "environment_reward", environment),
        contextlib.redirect_stdout(sys.stderr),
    ):
        trainer._train_domain(cfg.domains[0], ResumePoint())


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; returns every line it printed."""
    from learning_signal import adapter_state

    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=None, help=f"timed steps (default {STEPS})")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny model, a smoke test")
    parser.add_argument(
        "--domain",
        default=None,
        help="the domain whose warm start and GRPO steps are profiled (default: the config's "
        "first); pick one whose warm-started groups still carry signal on this machine",
    )
    add_override_argument(parser, RESERVED, " (per configuration)")
    args = parser.parse_args(argv)
    steps = args.steps if args.steps is not None else (1 if args.quick else STEPS)
    if steps < 1:
        parser.error(f"--steps must be >= 1, got {steps}")
    configs = list(dict.fromkeys(args.configs or CONFIGS))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

    with tempfile.TemporaryDirectory() as out:
        fields = {**(QUICK if args.quick else {}), **dict(args.overrides)}
        domain = args.domain or GRPOConfig(output_dir=out, **fields).domains[0]
        try:
            config = GRPOConfig(
                **{
                    **fields,
                    "output_dir": out,
                    "domains": [domain],
                    "score_after_warm_start": False,
                    "max_steps_per_domain": 1,
                    "report_to": [],
                }
            )
        except (TypeError, ValueError) as err:
            parser.error(str(err))
        if args.quick:
            tokenizer = load_tokenizer()
            trainer = GRPOTrainer(config, model=build_tiny_model(tokenizer), tokenizer=tokenizer)
        else:
            trainer = GRPOTrainer(config)
        timers = Timers()
        shape = ModelShape.of(trainer.model)
        trainer.rollout = timers.wrap("rollout_total_s", _counting(trainer.rollout, timers))
        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            trainer._warm_start(domain)
        warm_start_s = time.perf_counter() - started
        weights = adapter_state(trainer.model)
        base_micro_batch_size = config.per_device_train_batch_size
        printed: list[dict[str, Any]] = []
        timed_class = timed_trainer_class(timers, shape)
        with (
            patched(trainer_module, "DomainGRPOTrainer", timed_class),
            patched(
                scoring, "score_trajectory", timers.wrap("scoring_s", scoring.score_trajectory)
            ),
        ):
            run_config(trainer, weights, "all", 1, timers, base_micro_batch_size)  # untimed warm-up
            timers.active = True
            for name in configs:
                timers.reset()
                peaks = {"fp32": matmul_gflops(False)}
                if bf16_supported():
                    peaks["bf16"] = matmul_gflops(True)
                release_memory()
                reset_peak()
                run_config(trainer, weights, name, steps, timers, base_micro_batch_size)
                line = result_line(name, timers, peaks, bool(config.bf16), warm_start_s)
                line["peak_rss_mb"] = round(peak_resident_mb(), 1)
                print(json.dumps(line), flush=True)
                printed.append(line)
    rates = {line["config"]: line["episodes_per_min"] for line in printed}
    if "all" in rates and "baseline" in rates:
        last = {"speedup": round(rates["all"] / rates["baseline"], 3)}
        if "default" in rates:
            last["default_speedup"] = round(rates["default"] / rates["baseline"], 3)
        print(json.dumps(last), flush=True)
        printed.append(last)
    return printed


def _counting(rollout: Callable[..., dict[str, list[Any]]], timers: Timers) -> Callable[..., Any]:
    """``rollout`` counting the episodes it returns (while timing)."""

    def counted(*args: Any, **kwargs: Any) -> dict[str, list[Any]]:
        out = rollout(*args, **kwargs)
        if timers.active:
            timers.episodes += len(out["completion_ids"])
        return out

    return counted


def result_line(
    name: str, timers: Timers, peaks: dict[str, float], bf16: bool, warm_start_s: float
) -> dict[str, Any]:
    """One configuration's JSON line (per-step means); ``peaks``: the matmul rates by
    precision, the step's own (``bf16`` or float32) is the peak."""
    peak = peaks["bf16" if bf16 else "fp32"]
    seconds, steps = timers.seconds, max(timers.steps, 1)
    generation = seconds["generation_s"]
    split = {
        "rollout_s": seconds["rollout_total_s"] - seconds["scoring_s"],
        "scoring_s": seconds["scoring_s"],
        "logprob_s": seconds["logprob_s"],
        "fwd_bwd_s": seconds["training_step_s"] - generation,
        "optimizer_s": seconds["optimizer_s"],
        "step_s": seconds["step_s"],
    }
    gflops = timers.flops / 1e9 / steps
    fwd_bwd_s = split["fwd_bwd_s"] / steps
    rate = gflops / fwd_bwd_s if fwd_bwd_s > 0 else 0.0
    return {
        "config": name,
        "episodes_per_min": round(60 * timers.episodes / seconds["step_s"], 3),
        **{key: round(value / steps, 3) for key, value in split.items()},
        "fwd_bwd_gflops": round(gflops, 1),
        "fwd_bwd_gflops_per_s": round(rate, 2),
        "matmul_peak_gflops": round(peak, 1),
        **{f"matmul_{kind}_gflops": round(rate, 1) for kind, rate in peaks.items()},
        "fwd_bwd_share_of_peak": round(rate / peak, 3),
        "steps": timers.steps,
        "episodes_per_step": timers.episodes / steps,
        "bf16": bf16,
        "bf16_supported": bf16_supported(),
        "threads": torch.get_num_threads(),
        "warm_start_s": round(warm_start_s, 1),
    }


if __name__ == "__main__":
    main()
