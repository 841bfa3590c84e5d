"""``GRPOConfig``: TRL's GRPO configuration plus the continual-learning sequence.

Everything TRL's ``GRPOConfig`` offers (learning rate, loss type, KL ``beta``, vLLM, logging,
``report_to`` ...) is available unchanged. On top of it this class describes the domain
sequence, the task source, the CL algorithm and replay, the supervised warm start, the rollout
limits, the user simulator and LoRA. Invalid values fail at construction with a message that
names the field, the value and what is allowed.

Batch shape and TRL's derived fields. Each optimizer step trains on one *generation*: per device,
``batch_size_per_gpu x gradient_accumulation_steps`` task groups of ``num_samples_per_prompt``
episodes, rolled out together in one ``rollout_func`` call (so replay mixing sees the whole batch).
The forward/backward passes go through that generation ``micro_batch_size`` sequences at a time.
These TRL fields are derived, not set directly:

- ``num_generations`` = ``num_samples_per_prompt``;
- ``per_device_train_batch_size`` = ``micro_batch_size`` (``None``: ``batch_size_per_gpu x
  num_samples_per_prompt``, one pass per ``gradient_accumulation_steps``, as before micro-batching);
- ``steps_per_generation`` = episodes per generation / ``per_device_train_batch_size``, and TRL
  derives ``generation_batch_size`` from it. Values given for these two must agree (so a config
  rebuilt from ``to_dict()`` constructs again), other values fail.

``gradient_accumulation_steps`` keeps the user's meaning above (how many ``batch_size_per_gpu``
batches of task groups one optimizer step accumulates), so it round-trips through ``to_dict()``,
YAML and the command line. TRL's engine, whose trainer loop counts micro-batches, runs on
:meth:`GRPOConfig.engine_args`: a copy with ``gradient_accumulation_steps = steps_per_generation``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import trl

from tau2.continual_learning.default_model import DEFAULT_MODEL_NAME
from tau2.continual_learning.rollout.engines.hf import LOOKUP_TOKENS
from tau2.continual_learning.rollout.engines.vllm import DEFAULT_KV_CACHE_GB

USER_MODES = ("auto", "solo", "llm", "hf")
ROLLOUT_BACKENDS = ("hf", "vllm", "auto")
MICRO_BATCH_SIZE_DEFAULT = 1
"""Default ``micro_batch_size``: keeps the default CPU job under 6 GB peak RSS (docs/grpo.md)."""


class ConfigError(ValueError):
    """An invalid configuration value or combination."""


def _check(condition: bool, name: str, value: Any, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"GRPOConfig.{name}={value!r} is invalid: {allowed}")


def bf16_supported() -> bool:
    """bfloat16 autocast pays off: a CUDA GPU with bf16, or a CPU with native bf16 matmuls
    (AVX512-BF16/AMX: about 2x faster than float32 for the embedded model, measured)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@dataclass
class GRPOConfig(trl.GRPOConfig):
    """Configuration of a continual GRPO run (see the module docstring)."""

    # -- TRL fields with defaults suited to small-model agent RL -------------------------------
    learning_rate: float = field(
        default=1e-4,
        metadata={"help": "AdamW learning rate of the GRPO steps (the default suits LoRA)."},
    )
    logging_steps: float = field(default=1, metadata={"help": "Log every N steps."})
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bfloat16 autocast (default: on where the GPU or CPU supports bf16)."},
    )
    activation_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "Trade compute for memory in the backward pass (default off; "
            "--gradient_checkpointing is the same switch)."
        },
    )
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Alias of activation_checkpointing (transformers' older name)."},
    )
    # -- what to train ----------------------------------------------------------------------
    model_name_or_path: str = field(
        default=DEFAULT_MODEL_NAME,
        metadata={"help": "Embedded default model, a Hugging Face model id or a local folder."},
    )
    domains: list[str] = field(
        default_factory=lambda: ["airline", "retail", "telecom"],
        metadata={"help": "Domains trained in this order."},
    )
    task_source: str = field(
        default="skills",
        metadata={"help": "'skills' (compact tasks, CPU friendly) or 'tau2' (official tasks)."},
    )
    skills_seed: int = field(default=0, metadata={"help": "Seed of the generated skill tasks."})
    tool_arguments_in_prompt: bool = field(
        default=True,
        metadata={
            "help": "Skill prompts list each tool's arguments (false: names and descriptions "
            "only, so argument formats are learned, as the interference benchmark needs)."
        },
    )
    max_steps_per_domain: int = field(
        default=3,
        metadata={
            "help": "GRPO steps per domain (0: the supervised warm start only, no GRPO steps; "
            "needs warm_start_demos_per_domain > 0)."
        },
    )
    eval_tasks_per_domain: int | None = field(
        default=None, metadata={"help": "Cap on test tasks scored per domain (default: all)."}
    )
    eval_temperature: float = field(
        default=0.0, metadata={"help": "Sampling temperature for evaluation (0 = greedy)."}
    )
    exclude_trivial_tasks: bool = field(
        default=True,
        metadata={"help": "Drop training tasks that score 1.0 with an empty trajectory."},
    )
    # -- continual learning -----------------------------------------------------------------
    cl_algorithm: str = field(
        default="replay",
        metadata={"help": "Registered CL algorithm: sequential, replay, adaptive_replay, ..."},
    )
    replay_ratio: float = field(
        default=0.25, metadata={"help": "Share of each step's task groups that are replayed."}
    )
    replay_buffer_size: int = field(
        default=1000, metadata={"help": "Trajectories kept per domain in the replay buffer."}
    )
    replay_strategy: str = field(
        default="random", metadata={"help": "random, high_reward, recent or balanced."}
    )
    buffer_insertion_policy: str = field(
        default="reservoir",
        metadata={
            "help": "How a full per-domain buffer admits trajectories (fifo, reservoir, ...)."
        },
    )
    min_buffer_size: int = field(
        default=8, metadata={"help": "Replay starts once the buffer holds this many records."}
    )
    replay_all_domains: bool = field(
        default=True, metadata={"help": "Replay from all earlier domains (else the latest only)."}
    )
    max_replay_ratio: float = field(default=0.5, metadata={"help": "Adaptive replay: upper bound."})
    min_replay_ratio: float = field(default=0.1, metadata={"help": "Adaptive replay: lower bound."})
    adaptation_rate: float = field(default=0.1, metadata={"help": "Adaptive replay: step size."})
    forgetting_threshold: float = field(
        default=0.1, metadata={"help": "Adaptive replay: probe-score drop counted as forgetting."}
    )
    probe_interval: int = field(
        default=4, metadata={"help": "Adaptive replay: steps between probes of earlier domains."}
    )
    probe_tasks_per_domain: int = field(
        default=4, metadata={"help": "Adaptive replay: test tasks per earlier domain per probe."}
    )
    bc_weight: float = field(
        default=0.1,
        metadata={"help": "CLEAR: weight of the behaviour-cloning KL on replayed trajectories."},
    )
    bc_batch_size: int = field(
        default=2, metadata={"help": "CLEAR: stored trajectories cloned per optimisation step."}
    )
    reset_optimizer_between_domains: bool = field(
        default=True,
        metadata={
            "help": "Fresh optimizer at each domain start (as Avalanche resets it per "
            "experience); the schedule restarts per domain either way. False carries AdamW's "
            "moments over, and domain-end checkpoints then hold the optimizer state (2x the "
            "weights)."
        },
    )
    branch_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "A domain-end checkpoint (checkpoints/end-of-domain-NN) to continue under "
            "this run's cl_algorithm, whichever algorithm wrote it: runs that share their first "
            "domains train them once (GRPOTrainer.load_checkpoint(path, branch=True); "
            "docs/grpo.md). Not with resume_from_checkpoint, which continues the same run."
        },
    )
    max_consecutive_nonfinite_losses: int = field(
        default=3, metadata={"help": "Stop after this many NaN/inf losses in a row."}
    )
    # -- supervised warm start (grpo/warm_start.py) -----------------------------------------
    warm_start_demos_per_domain: int = field(
        default=16,
        metadata={
            "help": "Gold demonstrations (train tasks' gold actions, scored 1.0) trained on with "
            "supervised steps before each domain's GRPO steps; 0 = no warm start."
        },
    )
    warm_start_epochs: int = field(
        default=1, metadata={"help": "Warm start: passes over the demonstrations."}
    )
    warm_start_learning_rate: float = field(
        default=1e-3,
        metadata={"help": "Warm start: AdamW learning rate (constant; the default suits LoRA)."},
    )
    warm_start_batch_size: int = field(
        default=1, metadata={"help": "Warm start: demonstrations per optimizer step."}
    )
    warm_start_guard_tasks: int = field(
        default=8,
        metadata={
            "help": "Warm-start guard: this many of the domain's demonstration tasks are scored "
            "greedily before and after the warm start; a warm start that lowers their score is "
            "undone and retried at half the learning rate (0 = no guard)."
        },
    )
    warm_start_guard_retries: int = field(
        default=1,
        metadata={
            "help": "Warm-start guard: retries at half the learning rate; when all fail, the "
            "domain keeps its pre-warm-start weights."
        },
    )
    dynamic_sampling_max_extra_groups: int = field(
        default=0,
        metadata={
            "help": "Dynamic sampling: zero-variance groups of new tasks are replaced by fresh "
            "groups, at most this many extra groups per step (0 = off)."
        },
    )
    guided_groups: bool = field(
        default=False,
        metadata={
            "help": "Guided groups: in an all-fail group the last member is replaced by a known "
            "success of the task (stored, else its gold demonstration; off-policy)."
        },
    )
    # -- batch shape ------------------------------------------------------------------------
    batch_size_per_gpu: int = field(
        default=2, metadata={"help": "Task groups per process per step."}
    )
    num_samples_per_prompt: int = field(
        default=4, metadata={"help": "GRPO group size: episodes per task."}
    )
    micro_batch_size: int | None = field(
        default=MICRO_BATCH_SIZE_DEFAULT,
        metadata={
            "help": "Sequences per forward/backward pass on each device; it must divide the "
            "episodes of one optimizer step (batch_size_per_gpu x num_samples_per_prompt x "
            "gradient_accumulation_steps). Smaller = less memory, same update. None (YAML null): "
            "batch_size_per_gpu x num_samples_per_prompt."
        },
    )
    # -- rollouts ---------------------------------------------------------------------------
    max_turns: int = field(default=3, metadata={"help": "Agent turns per episode."})
    max_new_tokens_per_turn: int = field(
        default=64,
        metadata={"help": "Tokens per agent turn (the longest skill call takes about 50)."},
    )
    max_context_tokens: int = field(default=2048, metadata={"help": "Episode context limit."})
    max_tool_response_chars: int | None = field(
        default=None,
        metadata={
            "help": "Tool responses longer than this are shown to the model cut to this many "
            "characters (head and tail; tau2 scores the whole trajectory). None: the task "
            "source's default (skills 300, tau2 whole); 0: always whole."
        },
    )
    assistant_prefix: str | None = field(
        default=None,
        metadata={
            "help": "Prompt-side start of every agent turn (default: the tool-call opening)."
        },
    )
    # -- sampling engine --------------------------------------------------------------------
    rollout_backend: str = field(
        default="hf",
        metadata={
            "help": "Engine of rollouts, evaluation and probes: hf (transformers), vllm (one "
            "in-process vLLM engine per process for the run, weights loaded after every "
            "optimizer step) or auto (vllm where installed, else hf)."
        },
    )
    prompt_lookup_tokens: int = field(
        default=LOOKUP_TOKENS,
        metadata={
            "help": "hf engine: tokens drafted per row and decode step by prompt lookup "
            "(speculative decoding; greedy output unchanged, sampled tokens exactly "
            "distributed). 0: off."
        },
    )
    vllm_kv_cache_gb: float = field(
        default=DEFAULT_KV_CACHE_GB,
        metadata={"help": "KV cache of the vLLM engine in GB (it shares memory with training)."},
    )
    # -- user simulator ---------------------------------------------------------------------
    user_mode: str = field(
        default="auto",
        metadata={"help": "auto (solo where possible, else llm/hf), solo, llm (litellm) or hf."},
    )
    user_llm: str | None = field(
        default=None, metadata={"help": "litellm model string, e.g. hosted_vllm/NAME."}
    )
    user_api_base: str | None = field(
        default=None, metadata={"help": "OpenAI-compatible base URL."}
    )
    user_model_name_or_path: str | None = field(
        default=None, metadata={"help": "In-process HF user model (default: the policy model)."}
    )
    user_temperature: float = field(default=0.0, metadata={"help": "User simulator temperature."})
    # -- LoRA -------------------------------------------------------------------------------
    use_peft: bool = field(
        default=True,
        metadata={"help": "Train a LoRA adapter (false: full fine-tuning of every weight)."},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules to adapt (default: all linear layers)."}
    )

    def __post_init__(self) -> None:
        if self.output_dir is None or self.output_dir == "trainer_output":
            self.output_dir = "outputs/grpo_cl"
        if self.activation_checkpointing is None:
            self.activation_checkpointing = bool(self.gradient_checkpointing)
        # transformers before 5.20 (vLLM's CPU build pins it) knows only the older name
        self.gradient_checkpointing = self.activation_checkpointing
        if self.bf16 is None:
            self.bf16 = bf16_supported()
        if not self._cuda():
            # transformers' spelling for "train on the CPU": bf16 autocast there, and the
            # gloo process group under torchrun (without it each rank trained alone)
            self.use_cpu = True
        self._validate()
        self.num_generations = self.num_samples_per_prompt
        self.per_device_train_batch_size = self.micro_batch_size or self.group_batch_size
        self.steps_per_generation = self.episodes_per_step // self.per_device_train_batch_size
        given_generation_batch_size, self.generation_batch_size = self.generation_batch_size, None
        self.max_steps = self.max_steps_per_domain
        super().__post_init__()  # TRL derives generation_batch_size from steps_per_generation
        _check(
            given_generation_batch_size in (None, self.generation_batch_size),
            "generation_batch_size",
            given_generation_batch_size,
            f"None or {self.generation_batch_size} (derived: episodes per optimizer step x "
            "processes; set batch_size_per_gpu, num_samples_per_prompt and "
            "gradient_accumulation_steps instead)",
        )

    @property
    def group_batch_size(self) -> int:
        """Episodes of one batch of task groups: ``batch_size_per_gpu x num_samples_per_prompt``."""
        return self.batch_size_per_gpu * self.num_samples_per_prompt

    @property
    def agent_turn_prefix(self) -> str:
        """``assistant_prefix``, or the engine's default (the tool-call opening) when unset."""
        from tau2.continual_learning.rollout import CALL_PREFIX

        return self.assistant_prefix if self.assistant_prefix is not None else CALL_PREFIX

    @property
    def tool_response_limit(self) -> int | None:
        """``max_tool_response_chars`` resolved: the task source's default when ``None``, no
        limit when 0."""
        if self.max_tool_response_chars is None:
            from tau2.continual_learning.rollout.tasks import get_task_source

            return get_task_source(self.task_source).max_tool_response_chars
        return self.max_tool_response_chars or None

    @property
    def episodes_per_step(self) -> int:
        """Episodes each device rolls out (in one ``rollout_func`` call) and trains on per
        optimizer step: ``group_batch_size x gradient_accumulation_steps``."""
        return self.group_batch_size * self.gradient_accumulation_steps

    @property
    def sampling_backend(self) -> str:
        """``rollout_backend`` resolved: ``auto`` is ``vllm`` where vLLM is installed, else
        ``hf``."""
        if self.rollout_backend != "auto":
            return self.rollout_backend
        from tau2.continual_learning.rollout.engines.vllm import vllm_available

        return "vllm" if vllm_available() else "hf"

    def engine_args(self, output_dir: str) -> GRPOConfig:
        """The arguments TRL's engine runs with: a copy writing to ``output_dir`` whose
        ``gradient_accumulation_steps`` counts micro-batches (``steps_per_generation``).

        One generation is then split into ``steps_per_generation`` micro-batches of
        ``per_device_train_batch_size`` sequences whose gradients accumulate into exactly one
        optimizer step, as without micro-batching. The update is the same: TRL computes the
        advantages on the whole generation before splitting it, and (with ``gradient_accumulation_steps
        == steps_per_generation``) scales each micro-batch's loss so that the accumulated gradient
        equals the whole batch's. ``dapo`` (TRL's default), ``cispo`` and ``vespo`` divide each
        micro-batch's token sum by the token count of the whole generation; ``grpo``, ``sapo``,
        ``dr_grpo`` and ``luspo`` average equal-sized micro-batches. Only ``bnpo`` (mean over the
        tokens of each micro-batch) changes with the micro-batch size, as in TRL.
        """
        args = copy.copy(self)
        args.output_dir = output_dir
        args.gradient_accumulation_steps = self.steps_per_generation
        return args

    @staticmethod
    def _cuda() -> bool:
        import torch

        return torch.cuda.is_available()

    def _validate(self) -> None:
        from tau2.continual_learning.grpo.algorithms import GRPO_ALGORITHMS
        from tau2.continual_learning.rollout import available_domains
        from tau2.continual_learning.rollout.tasks import SOLO_DOMAINS, TASK_SOURCES

        valid_domains = available_domains()
        _check(
            isinstance(self.domains, list) and len(self.domains) > 0,
            "domains",
            self.domains,
            f"a non-empty list of domains from {valid_domains}",
        )
        for domain in self.domains:
            _check(
                domain in valid_domains,
                "domains",
                self.domains,
                f"unknown domain {domain!r}; valid: {valid_domains}",
            )
        _check(
            len(set(self.domains)) == len(self.domains),
            "domains",
            self.domains,
            "each domain at most once",
        )
        _check(
            self.task_source in TASK_SOURCES,
            "task_source",
            self.task_source,
            f"one of {tuple(TASK_SOURCES)}",
        )
        source_domains = TASK_SOURCES[self.task_source].domains
        bad = [d for d in self.domains if d not in source_domains]
        _check(
            not bad,
            "domains",
            self.domains,
            f"task_source={self.task_source!r} supports {list(source_domains)}; not {bad}",
        )
        self._check_warm_start()
        _check(
            self.max_steps_per_domain >= 1
            or (self.max_steps_per_domain == 0 and self.warm_start_demos_per_domain > 0),
            "max_steps_per_domain",
            self.max_steps_per_domain,
            "an integer >= 1, or 0 (warm start only) with warm_start_demos_per_domain > 0",
        )
        _check(
            self.eval_tasks_per_domain is None or self.eval_tasks_per_domain >= 1,
            "eval_tasks_per_domain",
            self.eval_tasks_per_domain,
            "None (all test tasks) or an integer >= 1",
        )
        if self.cl_algorithm not in GRPO_ALGORITHMS:
            try:
                GRPO_ALGORITHMS.get(self.cl_algorithm)
            except ValueError as err:
                raise ConfigError(
                    f"GRPOConfig.cl_algorithm={self.cl_algorithm!r} is invalid: {err}"
                ) from None
        self._check_algorithm_parameters()
        _check(
            not (self.branch_from_checkpoint and self.resume_from_checkpoint),
            "branch_from_checkpoint",
            self.branch_from_checkpoint,
            "not together with resume_from_checkpoint (a branch starts a new run from another "
            "run's domain end; a resume continues the run that wrote the checkpoint)",
        )
        _check(
            self.replay_buffer_size >= 1,
            "replay_buffer_size",
            self.replay_buffer_size,
            "an integer >= 1",
        )
        from tau2.continual_learning.insertion_policies import POLICIES

        _check(
            self.buffer_insertion_policy in POLICIES,
            "buffer_insertion_policy",
            self.buffer_insertion_policy,
            f"one of {sorted(POLICIES)}",
        )
        _check(
            self.batch_size_per_gpu >= 1,
            "batch_size_per_gpu",
            self.batch_size_per_gpu,
            "an integer >= 1",
        )
        _check(
            self.num_samples_per_prompt >= 2,
            "num_samples_per_prompt",
            self.num_samples_per_prompt,
            "an integer >= 2 (GRPO compares samples within a group)",
        )
        _check(
            self.gradient_accumulation_steps >= 1,
            "gradient_accumulation_steps",
            self.gradient_accumulation_steps,
            "an integer >= 1",
        )
        episodes = self.episodes_per_step
        divisors = [d for d in range(1, episodes + 1) if episodes % d == 0]
        _check(
            self.micro_batch_size is None or self.micro_batch_size in divisors,
            "micro_batch_size",
            self.micro_batch_size,
            f"None or a divisor of the {episodes} episodes per device and optimizer step "
            f"(batch_size_per_gpu={self.batch_size_per_gpu} x num_samples_per_prompt="
            f"{self.num_samples_per_prompt} x gradient_accumulation_steps="
            f"{self.gradient_accumulation_steps}): one of {divisors}",
        )
        micro = self.micro_batch_size or self.group_batch_size
        _check(
            self.steps_per_generation in (None, episodes // micro),
            "steps_per_generation",
            self.steps_per_generation,
            f"None or {episodes // micro} (derived: one generation per optimizer step, in "
            f"micro-batches of {micro}; set micro_batch_size instead)",
        )
        _check(self.max_turns >= 1, "max_turns", self.max_turns, "an integer >= 1")
        _check(
            self.prompt_lookup_tokens >= 0,
            "prompt_lookup_tokens",
            self.prompt_lookup_tokens,
            "an integer >= 0",
        )
        _check(
            self.max_new_tokens_per_turn >= 1,
            "max_new_tokens_per_turn",
            self.max_new_tokens_per_turn,
            "an integer >= 1",
        )
        _check(
            self.max_context_tokens >= 64,
            "max_context_tokens",
            self.max_context_tokens,
            "an integer >= 64",
        )
        _check(
            self.max_tool_response_chars is None
            or self.max_tool_response_chars == 0
            or self.max_tool_response_chars >= 64,
            "max_tool_response_chars",
            self.max_tool_response_chars,
            "None (the task source's default), 0 (whole responses) or an integer >= 64",
        )
        _check(
            self.tool_arguments_in_prompt or self.task_source == "skills",
            "tool_arguments_in_prompt",
            self.tool_arguments_in_prompt,
            "True with task_source='tau2' (official prompts carry tau2's whole tool specs)",
        )
        _check(self.user_mode in USER_MODES, "user_mode", self.user_mode, f"one of {USER_MODES}")
        if self.user_mode == "solo" and self.task_source == "tau2":
            needs_user = [d for d in self.domains if d not in SOLO_DOMAINS]
            _check(
                not needs_user,
                "user_mode",
                self.user_mode,
                f"official tau2 tasks of {needs_user} have no ticket and need a user simulator: "
                "use user_mode 'auto', 'hf' or 'llm', or task_source='skills'",
            )
        if self.user_mode == "llm":
            _check(
                bool(self.user_llm),
                "user_llm",
                self.user_llm,
                "a litellm model string when user_mode='llm'",
            )
        _check(self.eval_temperature >= 0.0, "eval_temperature", self.eval_temperature, ">= 0")
        _check(
            self.max_consecutive_nonfinite_losses >= 1,
            "max_consecutive_nonfinite_losses",
            self.max_consecutive_nonfinite_losses,
            "an integer >= 1",
        )
        self._check_rollout_backend()
        _check(self.lora_r >= 1, "lora_r", self.lora_r, "an integer >= 1")
        _check(0.0 <= self.lora_dropout < 1.0, "lora_dropout", self.lora_dropout, "in [0, 1)")

    def _check_rollout_backend(self) -> None:
        from tau2.continual_learning.rollout.engines.vllm import VLLM_MISSING, vllm_available

        _check(
            self.rollout_backend in ROLLOUT_BACKENDS,
            "rollout_backend",
            self.rollout_backend,
            f"one of {ROLLOUT_BACKENDS}",
        )
        _check(
            not self.use_vllm,
            "use_vllm",
            self.use_vllm,
            "False: TRL's own vLLM engine would be rebuilt for every domain; set "
            "rollout_backend='vllm' for one engine per run",
        )
        _check(self.vllm_kv_cache_gb > 0, "vllm_kv_cache_gb", self.vllm_kv_cache_gb, "> 0")
        if self.rollout_backend == "vllm":
            _check(vllm_available(), "rollout_backend", self.rollout_backend, VLLM_MISSING)

    def _check_warm_start(self) -> None:
        def integer(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        _check(
            integer(self.warm_start_demos_per_domain) and self.warm_start_demos_per_domain >= 0,
            "warm_start_demos_per_domain",
            self.warm_start_demos_per_domain,
            "an integer >= 0 (0 = no warm start)",
        )
        _check(
            integer(self.warm_start_epochs) and self.warm_start_epochs >= 1,
            "warm_start_epochs",
            self.warm_start_epochs,
            "an integer >= 1",
        )
        _check(
            isinstance(self.warm_start_learning_rate, (int, float))
            and not isinstance(self.warm_start_learning_rate, bool)
            and math.isfinite(self.warm_start_learning_rate)
            and self.warm_start_learning_rate > 0,
            "warm_start_learning_rate",
            self.warm_start_learning_rate,
            "a finite number > 0",
        )
        _check(
            integer(self.warm_start_batch_size) and self.warm_start_batch_size >= 1,
            "warm_start_batch_size",
            self.warm_start_batch_size,
            "an integer >= 1",
        )
        for name in ("warm_start_guard_tasks", "warm_start_guard_retries"):
            value = getattr(self, name)
            _check(integer(value) and value >= 0, name, value, "an integer >= 0")
        _check(
            integer(self.dynamic_sampling_max_extra_groups)
            and self.dynamic_sampling_max_extra_groups >= 0,
            "dynamic_sampling_max_extra_groups",
            self.dynamic_sampling_max_extra_groups,
            "an integer >= 0 (0 = off)",
        )

    def _check_algorithm_parameters(self) -> None:
        """The flat replay fields, checked with the algorithms' own rules whichever algorithm
        is selected (so a bad flag fails now, not when an algorithm is swapped in)."""
        from tau2.continual_learning.grpo.algorithms.parameters import (
            InvalidParameter,
            check,
            check_ratio_bounds,
        )

        adaptive = (
            ("replay_ratio", self.replay_ratio) if self.cl_algorithm == "adaptive_replay" else None
        )
        try:
            check(
                replay_ratio=self.replay_ratio,
                replay_strategy=self.replay_strategy,
                min_buffer_size=self.min_buffer_size,
                adaptation_rate=self.adaptation_rate,
                forgetting_threshold=self.forgetting_threshold,
                probe_interval=self.probe_interval,
                bc_weight=self.bc_weight,
                bc_batch_size=self.bc_batch_size,
            )
            check(probe_tasks=self.probe_tasks_per_domain)
            check_ratio_bounds(self.min_replay_ratio, self.max_replay_ratio, adaptive)
        except InvalidParameter as err:
            name = "probe_tasks_per_domain" if err.name == "probe_tasks" else err.name
            raise ConfigError(
                f"GRPOConfig.{name}={err.value!r} is invalid: {err.allowed}"
            ) from None


def parse_override(text: str, reserved: Collection[str] = (), hint: str = "") -> tuple[str, Any]:
    """A ``--set key=value`` argument of the benchmark scripts: a :class:`GRPOConfig` field and
    its value parsed as YAML (so ``3e-5``, ``true`` and ``[a, b]`` take their types). Fields in
    ``reserved`` are refused (the script sets them; ``hint`` says how). Raises
    ``argparse.ArgumentTypeError``, whose message argparse prints."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    if key not in {f.name for f in dataclasses.fields(GRPOConfig)}:
        raise argparse.ArgumentTypeError(f"{key!r} is not a GRPOConfig field")
    if key in reserved:
        raise argparse.ArgumentTypeError(f"{key!r} is set by the benchmark{hint}")
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str) and _EXPONENT_FLOAT.fullmatch(parsed):
        parsed = float(parsed)  # YAML 1.1 (PyYAML) reads an exponent without a dot as a string
    return key, parsed


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def add_override_argument(
    parser: argparse.ArgumentParser, reserved: Collection[str], hint: str
) -> None:
    """Add the benchmark scripts' repeatable ``--set KEY=VALUE`` (:func:`parse_override`;
    the pairs land in ``args.overrides``)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=functools.partial(parse_override, reserved=reserved, hint=hint),
        default=[],
        metavar="KEY=VALUE",
        help="override a GRPOConfig field (repeatable; the value is parsed as YAML)",
    )
