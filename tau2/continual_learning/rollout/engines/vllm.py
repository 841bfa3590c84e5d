"""vLLM policy backend (GPU, optional): the :class:`~tau2.continual_learning.rollout.engines.hf.Policy`
interface over ``vllm.LLM``.

Pass a model name/path (an ``LLM`` is built with ``logprobs_mode="processed_logprobs"`` so the
returned log-probs are those of the sampling distribution, after temperature/top-p) or a
ready ``vllm.LLM`` (e.g. TRL's colocated engine). Keeping the engine's weights in sync with a
trainer is the trainer's job (TRL does it); this class only samples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tau2.continual_learning.rollout.engines.base import (
    Generation,
    SamplingParams,
    split_generation,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

VLLM_MISSING = (
    "VLLMPolicy needs the optional dependency vllm (GPU only): `pip install 'tau2-continual[vllm]'`. "
    "On CPU use HFPolicy instead."
)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(VLLM_MISSING) from exc
    return vllm


class VLLMPolicy:
    """Batched sampling with vLLM; one ``LLM.generate`` call per turn for all prompts."""

    def __init__(
        self, llm: Any, tokenizer: PreTrainedTokenizerBase | None = None, **llm_kwargs: Any
    ) -> None:
        vllm = _import_vllm()
        if isinstance(llm, str):
            llm = vllm.LLM(model=llm, logprobs_mode="processed_logprobs", **llm_kwargs)
        self.llm = llm
        self.tokenizer = tokenizer if tokenizer is not None else llm.get_tokenizer()
        self._vllm = vllm

    def generate(
        self, prompts: list[list[int]], sampling: SamplingParams, seed: int | None = None
    ) -> list[Generation]:
        """One continuation per prompt, stopping at the eos token (see ``Policy``)."""
        if not prompts:
            return []
        eos = self.tokenizer.eos_token_id
        params = self._vllm.SamplingParams(
            n=1,
            max_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k if sampling.top_k > 0 else -1,
            logprobs=0,
            seed=seed,
            stop_token_ids=[eos],
            stop=list(sampling.stop_strings) or None,
            include_stop_str_in_output=True,
        )
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
