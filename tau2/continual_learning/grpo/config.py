"""``GRPOConfig``: TRL's GRPO configuration (unchanged, ``report_to`` and ``epsilon_high``
included) plus the continual run: domains, task source, CL algorithm and replay, warm start,
rollouts, sampling engine, user simulator and LoRA.

The configuration is data: each field's valid values are one :class:`~tau2.continual_learning.
rules.Rule` in :data:`RULES`; only checks of several fields are code (``_check_combinations``).
A bad value fails at construction with a :class:`ConfigError` naming field, value and what is
allowed. docs/configuration.md lists the fields from the same table and explains the batch shape.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import trl

from tau2.continual_learning.cl_algorithm import GRPO_ALGORITHMS
from tau2.continual_learning.default_model import DEFAULT_MODEL_NAME
from tau2.continual_learning.grpo import sampling_backend
from tau2.continual_learning.grpo.algorithms import parameters
from tau2.continual_learning.grpo.config_error import ConfigError, require
from tau2.continual_learning.grpo.deprecated_names import take_deprecated_names
from tau2.continual_learning.grpo.sampling_backend import SAMPLING_BACKENDS
from tau2.continual_learning.grpo.token_batch import bf16_supported
from tau2.continual_learning.insertion_policies import POLICIES
from tau2.continual_learning.rules import InvalidValue, Rule, check
from tau2.continual_learning.sampling_defaults import (
    DEFAULT_KV_CACHE_GB,
    LOOKUP_TOKENS,
    VLLM_MISSING,
    vllm_available,
)

USER_MODES = ("auto", "solo", "llm", "hf")
CURRICULA = ("none", "pass_rate")


def _domains() -> list[str]:
    from tau2.continual_learning.rollout import available_domains

    return available_domains()


def _task_sources() -> tuple[str, ...]:
    from tau2.continual_learning.rollout.tasks import TASK_SOURCES

    return tuple(TASK_SOURCES)


def _help(text: str, default: Any = None) -> Any:
    """A dataclass field with ``--help`` text (HfArgumentParser reads ``metadata["help"]``);
    what ``None`` stands for is said by the field's rule (:data:`RULES`)."""
    return field(default=default, metadata={"help": text})


@dataclass
class GRPOConfig(trl.GRPOConfig):
    """Configuration of a continual GRPO run (see the module docstring and
    docs/configuration.md)."""

    # -- TRL fields with defaults suited to small-model agent RL -------------------------------
    learning_rate: float = _help("AdamW learning rate of the GRPO steps (suits LoRA).", 1e-4)
    logging_steps: float = _help("Log every N steps.", 1)
    bf16: bool | None = _help("bfloat16 autocast.")
    activation_checkpointing: bool | None = _help(
        "Trade compute for memory in the GRPO steps' backward passes."
    )
    gradient_checkpointing: bool | None = _help("Alias of activation_checkpointing.")
    gradient_accumulation_steps: int = _help("batch_size_per_gpu batches per optimizer step.", 1)
    # -- what to train ----------------------------------------------------------------------
    model_name_or_path: str = _help(
        "Embedded default model, a Hugging Face model id or a local folder.", DEFAULT_MODEL_NAME
    )
    domains: list[str] = field(
        default_factory=lambda: ["airline", "retail", "telecom"],
        metadata={"help": "Domains trained in this order."},
    )
    task_source: str = _help("'skills' (compact, CPU friendly) or 'tau2' (official).", "skills")
    skills_seed: int = _help("Seed of the generated skill tasks.", 0)
    tool_arguments_in_prompt: bool = _help(
        "Skill prompts list each tool's arguments (false: names and descriptions only).", True
    )
    max_steps_per_domain: int = _help("GRPO steps per domain.", 3)
    eval_tasks_per_domain: int | None = _help("Test tasks scored per domain.")
    eval_temperature: float = _help("Sampling temperature of evaluation (0: greedy).", 0.0)
    exclude_trivial_tasks: bool = _help("Drop train tasks an empty trajectory solves.", True)
    # -- continual learning -----------------------------------------------------------------
    cl_algorithm: str = _help("Registered GRPO CL algorithm (sequential, replay, ...).", "replay")
    replay_ratio: float = _help("Share of each step's task groups that are replayed.", 0.25)
    replay_buffer_size: int = _help("Trajectories kept per domain in the buffer.", 1000)
    replay_strategy: str = _help("How replayed trajectories are sampled.", "random")
    buffer_insertion_policy: str = _help("How a full buffer admits trajectories.", "reservoir")
    min_buffer_size: int = _help("Replay starts once the buffer holds this many records.", 8)
    replay_all_domains: bool = _help("Replay all earlier domains (false: the latest).", True)
    max_replay_ratio: float = _help("Adaptive replay: upper bound of the ratio.", 0.5)
    min_replay_ratio: float = _help("Adaptive replay: lower bound of the ratio.", 0.1)
    adaptation_rate: float = _help("Adaptive replay: step size of the ratio.", 0.1)
    forgetting_threshold: float = _help("Adaptive replay: score drop counted as forgetting.", 0.1)
    probe_interval: int = _help("Adaptive replay: steps between probes.", 1)
    probe_tasks_per_domain: int = _help(
        "Adaptive replay: validation tasks (train tasks, never test) per domain per probe.", 4
    )
    bc_weight: float = _help("CLEAR: weight of the behaviour-cloning KL.", 0.1)
    bc_batch_size: int = _help("CLEAR: stored trajectories cloned per step.", 2)
    reset_optimizer_between_domains: bool = _help(
        "Fresh optimizer at each domain start (false: AdamW's moments carry over).", True
    )
    branch_from_checkpoint: str | None = _help(
        "A domain-end checkpoint to continue under this run's cl_algorithm."
    )
    max_consecutive_nonfinite_losses: int = _help("Stop after this many NaN/inf losses.", 3)
    # -- supervised warm start (grpo/warm_start.py) -----------------------------------------
    warm_start_demos_per_domain: int = _help("Gold demonstrations trained on per domain.", 16)
    warm_start_domains: list[str] | None = field(
        default=None, metadata={"help": "Domains that get the warm start."}
    )
    warm_start_epochs: int = _help("Warm start: passes over the demonstrations.", 1)
    warm_start_learning_rate: float = _help("Warm start: constant AdamW learning rate.", 1e-3)
    warm_start_batch_size: int = _help("Warm start: demonstrations per optimizer step.", 1)
    warm_start_activation_checkpointing: bool = _help(
        "Warm start: keep each layer's input only and recompute the rest in backward (the "
        "run's memory peak, for more time).",
        True,
    )
    warm_start_guard_tasks: int = _help("Warm-start guard: tasks scored before and after.", 8)
    warm_start_guard_retries: int = _help("Warm-start guard: retries at half the rate.", 1)
    score_after_warm_start: bool = _help("Score the domain again after its warm start.", True)
    # -- learning signal ----------------------------------------------------------------------
    partial_credit_weight: float = _help(
        "Training reward = tau2 reward + weight x partial credit (evaluation stays binary).", 0.0
    )
    curriculum: str = _help("pass_rate: prefer tasks the policy sometimes solves.", "none")
    dynamic_sampling_max_extra_groups: int = _help(
        "Zero-variance groups replaced by fresh ones, at most this many per step.", 0
    )
    guided_groups: bool = _help("An all-fail group's last member becomes a known success.", False)
    # -- batch shape ------------------------------------------------------------------------
    batch_size_per_gpu: int = _help("Task groups per process per step.", 2)
    num_samples_per_prompt: int = _help("GRPO group size: episodes per task.", 4)
    micro_batch_size: int | None = _help(
        "Sequences per forward/backward pass (smaller: less memory, same update).", 1
    )
    shared_prefix: bool = _help("Encode each distinct prompt of a micro-batch once.", True)
    # -- rollouts ---------------------------------------------------------------------------
    max_turns: int = _help("Agent turns per episode.", 3)
    max_new_tokens_per_turn: int = _help("Tokens per agent turn.", 64)
    max_context_tokens: int | None = _help("Episode context limit in tokens.")
    max_tool_response_chars: int | None = _help(
        "Tool responses shown to the model cut to this many characters (head and tail)."
    )
    assistant_prefix: str | None = _help("Prompt-side start of every agent turn.")
    # -- sampling engine --------------------------------------------------------------------
    sampling_backend: str = _help(
        "Engine of rollouts, evaluation and probes (auto: vllm where installed, faster (GPU or "
        "bf16 CPU) and it serves the model, else hf).",
        "hf",
    )
    rollout_backend: str | None = _help("Deprecated name of sampling_backend.")
    prompt_lookup_tokens: int = _help(
        "hf engine: tokens drafted per row and decode step by prompt lookup.", LOOKUP_TOKENS
    )
    vllm_kv_cache_gb: float = _help("KV cache of the vLLM engine in GB.", DEFAULT_KV_CACHE_GB)
    vllm_gpu_memory_utilization: float | None = _help("GPU memory share of the vLLM engine.")
    vllm_max_model_len: int | None = _help("Longest sequence the vLLM engine serves.")
    # -- user simulator ---------------------------------------------------------------------
    user_mode: str = _help("auto, solo, llm (litellm) or hf.", "auto")
    user_llm: str | None = _help("litellm model string, e.g. hosted_vllm/NAME.")
    user_api_base: str | None = _help("OpenAI-compatible base URL of user_llm.")
    user_model_name_or_path: str | None = _help("In-process HF user model.")
    user_temperature: float = _help("User simulator temperature.", 0.0)
    user_max_new_tokens: int = _help("Longest user reply in tokens.", 128)
    # -- LoRA -------------------------------------------------------------------------------
    use_peft: bool = _help("Train a LoRA adapter (false: full fine-tuning).", True)
    lora_r: int = _help("LoRA rank.", 16)
    lora_alpha: int = _help("LoRA alpha.", 32)
    lora_dropout: float = _help("LoRA dropout.", 0.0)
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules to adapt."}
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
        if not torch.cuda.is_available():
            # transformers' spelling for "train on the CPU": bf16 autocast there, and the
            # gloo process group under torchrun (without it each rank trained alone)
            self.use_cpu = True
        try:  # the registry's message also names the other wing's algorithms
            GRPO_ALGORITHMS.get(self.cl_algorithm)
        except (ValueError, TypeError) as err:
            raise ConfigError("cl_algorithm", self.cl_algorithm, str(err)) from None
        check(RULES, {name: getattr(self, name) for name in RULES}, ConfigError)
        take_deprecated_names(self)
        self._check_combinations()
        self._resolve_defaults()
        self.num_generations = self.num_samples_per_prompt
        self.per_device_train_batch_size = self.micro_batch_size or self.group_batch_size
        self.steps_per_generation = self.episodes_per_step // self.per_device_train_batch_size
        given_generation_batch_size, self.generation_batch_size = self.generation_batch_size, None
        self.max_steps = self.max_steps_per_domain
        super().__post_init__()  # TRL derives generation_batch_size from steps_per_generation
        require(
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
    def episodes_per_step(self) -> int:
        """Episodes each device rolls out (in one ``rollout_func`` call) and trains on per
        optimizer step: ``group_batch_size x gradient_accumulation_steps``."""
        return self.group_batch_size * self.gradient_accumulation_steps

    def trl_args(self, output_dir: str) -> GRPOConfig:
        """The arguments TRL's training loop runs with: a copy writing to ``output_dir`` whose
        ``gradient_accumulation_steps`` counts micro-batches (``steps_per_generation``), so one
        generation's micro-batches accumulate into one optimizer step (docs/configuration.md)."""
        args = copy.copy(self)
        args.output_dir = output_dir
        args.gradient_accumulation_steps = self.steps_per_generation
        return args

    def _resolve_defaults(self) -> None:
        """Fields whose ``None`` (or ``auto``) stands for a default get the concrete value, so
        every reader sees one value; resolving again changes nothing (``to_dict()`` round-trips).
        ``max_tool_response_chars`` keeps 0 (whole responses)."""
        from tau2.continual_learning.rollout import CALL_PREFIX
        from tau2.continual_learning.rollout.tasks import get_task_source

        if self.sampling_backend == "auto":
            self._sampling_backend_auto = True
            self.sampling_backend = sampling_backend.installed_backend()
        if self.sampling_backend == "vllm":
            model_config = sampling_backend.local_model_config(self.model_name_or_path)
            if model_config is not None:
                self.settle_sampling_backend(model_config)
        if self.assistant_prefix is None:
            self.assistant_prefix = CALL_PREFIX
        if self.max_tool_response_chars is None:
            source = get_task_source(self.task_source)
            self.max_tool_response_chars = source.max_tool_response_chars

    def settle_sampling_backend(self, model_config: Any) -> None:
        """Keep ``vllm`` only for a model it can serve: ``auto`` falls back to ``hf`` with a
        warning, ``vllm`` by name is refused (``grpo/sampling_backend.py``). Called at
        construction where the model's config is local, and by the trainer with its model."""
        auto = getattr(self, "_sampling_backend_auto", False)
        self.sampling_backend = sampling_backend.settled_backend(
            self.sampling_backend, model_config, auto
        )

    def _check_combinations(self) -> None:
        """The checks that involve several fields (each field alone has passed :data:`RULES`):
        ``(holds, field, what is allowed)``, the first that fails is raised."""
        from tau2.continual_learning.rollout.tasks import SOLO_DOMAINS, TASK_SOURCES

        supported = TASK_SOURCES[self.task_source].domains
        unsupported = [d for d in self.domains if d not in supported]
        not_trained = [d for d in self.warm_start_domains or () if d not in self.domains]
        episodes = self.episodes_per_step
        divisors = [d for d in range(1, episodes + 1) if episodes % d == 0]
        micro = self.micro_batch_size or self.group_batch_size
        needs_user = [d for d in self.domains if d not in SOLO_DOMAINS]
        adaptive = (
            ("replay_ratio", self.replay_ratio) if self.cl_algorithm == "adaptive_replay" else None
        )
        try:
            parameters.check_ratio_bounds(self.min_replay_ratio, self.max_replay_ratio, adaptive)
        except InvalidValue as err:
            raise ConfigError(err.name, err.value, err.allowed) from None
        for holds, name, allowed in (
            (
                not unsupported,
                "domains",
                f"task_source={self.task_source!r} supports {list(supported)}; not {unsupported}",
            ),
            (
                not not_trained,
                "warm_start_domains",
                f"None or domains of this run ({self.domains}); not {not_trained}",
            ),
            (
                self.max_steps_per_domain >= 1 or self.warm_start_demos_per_domain > 0,
                "max_steps_per_domain",
                "an integer >= 1, or 0 (warm start only) with warm_start_demos_per_domain > 0",
            ),
            (
                not (self.branch_from_checkpoint and self.resume_from_checkpoint),
                "branch_from_checkpoint",
                "not together with resume_from_checkpoint (a branch starts a new run from "
                "another run's domain end; a resume continues the run that wrote it)",
            ),
            (
                self.micro_batch_size is None or self.micro_batch_size in divisors,
                "micro_batch_size",
                f"None or a divisor of the {episodes} episodes per device and optimizer step "
                f"(batch_size_per_gpu={self.batch_size_per_gpu} x num_samples_per_prompt="
                f"{self.num_samples_per_prompt} x gradient_accumulation_steps="
                f"{self.gradient_accumulation_steps}): one of {divisors}",
            ),
            (
                self.steps_per_generation in (None, episodes // micro),
                "steps_per_generation",
                f"None or {episodes // micro} (derived: one generation per optimizer step, in "
                f"micro-batches of {micro}; set micro_batch_size instead)",
            ),
            (
                self.max_tool_response_chars in (None, 0) or self.max_tool_response_chars >= 64,
                "max_tool_response_chars",
                RULES["max_tool_response_chars"].allowed(),
            ),
            (
                self.tool_arguments_in_prompt or self.task_source == "skills",
                "tool_arguments_in_prompt",
                "True with task_source='tau2' (official prompts carry tau2's whole tool specs)",
            ),
            (
                not (self.user_mode == "solo" and self.task_source == "tau2" and needs_user),
                "user_mode",
                f"official tau2 tasks of {needs_user} have no ticket and need a user simulator: "
                "use user_mode 'auto', 'hf' or 'llm', or task_source='skills'",
            ),
            (
                self.user_mode != "llm" or bool(self.user_llm),
                "user_llm",
                "a litellm model string when user_mode='llm'",
            ),
            (
                not self.use_vllm,
                "use_vllm",
                "False: TRL's own vLLM engine would be rebuilt for every domain; set "
                "sampling_backend='vllm' for one engine per run",
            ),
            (
                self.sampling_backend != "vllm" or vllm_available(),
                "sampling_backend",
                VLLM_MISSING,
            ),
        ):
            require(holds, name, getattr(self, name), allowed)


_AT_LEAST_1 = Rule(int, low=1)
_SHARED_WITH_ALGORITHMS = [n for n in parameters.RULES if n != "probe_tasks"]
RULES: dict[str, Rule] = {
    # TRL's fields this configuration sets defaults for or documents
    "learning_rate": Rule(float, low=0, open_low=True),
    "logging_steps": Rule(float, low=0, open_low=True),
    "bf16": Rule(bool, none="where the GPU or CPU supports bf16"),
    "activation_checkpointing": Rule(bool, none="gradient_checkpointing's value"),
    "gradient_checkpointing": Rule(bool, none="off"),
    "gradient_accumulation_steps": _AT_LEAST_1,
    "epsilon_high": Rule(float, low=0, open_low=True, none="epsilon's value: symmetric clip"),
    # what to train
    "model_name_or_path": Rule(str),
    "domains": Rule(list, low=1, choices=_domains, item="domain"),
    "task_source": Rule(str, choices=_task_sources),
    "skills_seed": Rule(int),
    "tool_arguments_in_prompt": Rule(bool),
    "max_steps_per_domain": Rule(int, low=0, note="0: warm start only"),
    "eval_tasks_per_domain": Rule(int, low=1, none="all test tasks"),
    "eval_temperature": Rule(float, low=0),
    "exclude_trivial_tasks": Rule(bool),
    # continual learning (the replay parameters share the algorithms' rules)
    "cl_algorithm": Rule(str, choices=GRPO_ALGORITHMS.names),
    "replay_buffer_size": _AT_LEAST_1,
    "buffer_insertion_policy": Rule(str, choices=lambda: sorted(POLICIES)),
    "replay_all_domains": Rule(bool),
    **{name: parameters.RULES[name] for name in _SHARED_WITH_ALGORITHMS},
    "probe_tasks_per_domain": parameters.RULES["probe_tasks"],
    "reset_optimizer_between_domains": Rule(bool),
    "branch_from_checkpoint": Rule(str, none="start from the model"),
    "max_consecutive_nonfinite_losses": _AT_LEAST_1,
    # supervised warm start
    "warm_start_demos_per_domain": Rule(int, low=0, note="0: no warm start"),
    "warm_start_domains": Rule(list, low=1, choices=_domains, item="domain", none="every domain"),
    "warm_start_epochs": _AT_LEAST_1,
    "warm_start_learning_rate": Rule(float, low=0, open_low=True),
    "warm_start_batch_size": _AT_LEAST_1,
    "warm_start_activation_checkpointing": Rule(bool),
    "warm_start_guard_tasks": Rule(int, low=0, note="0: no guard"),
    "warm_start_guard_retries": Rule(int, low=0),
    "score_after_warm_start": Rule(bool),
    # learning signal
    "partial_credit_weight": Rule(float, low=0),
    "curriculum": Rule(str, choices=lambda: CURRICULA),
    "dynamic_sampling_max_extra_groups": Rule(int, low=0, note="0: off"),
    "guided_groups": Rule(bool),
    # batch shape
    "batch_size_per_gpu": _AT_LEAST_1,
    "num_samples_per_prompt": Rule(int, low=2, note="GRPO compares samples within a group"),
    "micro_batch_size": Rule(
        int,
        none="batch_size_per_gpu x num_samples_per_prompt",
        note="a divisor of the episodes per device and optimizer step",
    ),
    "shared_prefix": Rule(bool),
    # rollouts
    "max_turns": _AT_LEAST_1,
    "max_new_tokens_per_turn": _AT_LEAST_1,
    "max_context_tokens": Rule(
        int, low=64, none="the model's window", note="a run whose prompts do not fit is refused"
    ),
    "max_tool_response_chars": Rule(
        int, low=0, none="the task source's default", note="0: whole responses; else >= 64"
    ),
    "assistant_prefix": Rule(str, none="the tool-call opening"),
    # sampling engine
    "sampling_backend": Rule(str, choices=lambda: SAMPLING_BACKENDS),
    "rollout_backend": Rule(
        str, choices=lambda: SAMPLING_BACKENDS, none="unset", note="deprecated: sampling_backend"
    ),
    "prompt_lookup_tokens": Rule(int, low=0, note="0: off"),
    "vllm_kv_cache_gb": Rule(float, low=0, open_low=True),
    "vllm_gpu_memory_utilization": Rule(
        float,
        0,
        1,
        open_low=True,
        none="the engine's weights, KV cache and a margin, on a GPU",
        note="refused when it does not fit beside training; unused on a CPU",
    ),
    "vllm_max_model_len": Rule(
        int, low=64, none="the context limit", note="from the context limit to the model's window"
    ),
    # user simulator
    "user_mode": Rule(str, choices=lambda: USER_MODES),
    "user_llm": Rule(str, none="needed only with user_mode='llm'"),
    "user_api_base": Rule(str, none="litellm's default"),
    "user_model_name_or_path": Rule(str, none="the policy model before training"),
    "user_temperature": Rule(float, low=0),
    "user_max_new_tokens": Rule(int, low=1),
    # LoRA
    "use_peft": Rule(bool),
    "lora_r": _AT_LEAST_1,
    "lora_alpha": _AT_LEAST_1,
    "lora_dropout": Rule(float, 0, 1, open_high=True),
    "lora_target_modules": Rule(list, low=1, item="module", none="all linear layers"),
}
"""Each field's valid values, declared once: checked at construction (:class:`ConfigError`) and
listed in docs/configuration.md (:func:`~tau2.continual_learning.rules.reference`)."""
