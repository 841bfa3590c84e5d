"""Sampling engines behind the :class:`~tau2.continual_learning.rollout.engines.base.Policy`
protocol: plain transformers (``hf``, with its prefix key/value cache) and vLLM (``vllm``)."""
