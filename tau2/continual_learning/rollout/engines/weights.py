"""What an inference engine needs to know about a model being trained: when its weights changed
(:func:`weights_version`) and what they are for inference (:func:`inference_weights`, LoRA
adapters merged in)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

_optimizer_steps = 0
_step_hook: Any = None


def _count_step(optimizer: Any, args: Any, kwargs: Any) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


def weights_version(model: Any) -> int:
    """A counter that moves whenever ``model``'s weights may have changed: the sum of its
    tensors' version counters (bumped by in-place writes: ``load_state_dict``, a PEFT merge,
    most optimizers) plus the optimizer steps taken in this process. The second part is needed
    because fused optimizers (``adamw_torch_fused``, transformers' default) write parameters
    without bumping their version counters; torch's global step hook sees every step. Cheap (no
    data is read), so engines call it before every batch."""
    global _step_hook
    if _step_hook is None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        _step_hook = register_optimizer_step_post_hook(_count_step)
    return _optimizer_steps + sum(p._version for p in model.parameters())


def inference_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` pairs of ``model``'s weights under the plain transformers names, as an
    engine built from the base model's config loads them.

    For a PEFT LoRA model each adapted layer's weight is its base weight plus the active
    adapters' delta (what ``merge_adapter`` would write), computed one layer at a time without
    touching the model: merging and unmerging in place, as TRL does, would leave rounding
    residue in the base weights after every step.

    A model sharded by FSDP2 (its parameters ``DTensor`` shards, as ``accelerate``'s FSDP2
    plugin leaves them) yields each weight whole, gathered when the engine asks for it
    (``DTensor.full_tensor()``, one parameter at a time): the engine loads layer by layer and
    no second full copy of the model is ever held. Gathering is collective, so every rank must
    consume the pairs together, in order (each rank's engine syncs at the same points).
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        with torch.no_grad():
            yield from ((name, whole(t)) for name, t in model.state_dict().items())
        return
    base = model.get_base_model()
    adapted = {name: module for name, module in _lora_layers(model).items() if not module.merged}
    with torch.no_grad():
        for key, tensor in base.state_dict().items():
            if ".lora_" in key or "modules_to_save." in key:
                continue
            key = key.replace(".base_layer.", ".").replace(".original_module.", ".")
            module = adapted.get(key)
            if module is not None:
                for adapter in module.active_adapters:
                    if adapter in module.lora_A:
                        tensor = tensor + module.get_delta_weight(adapter).to(tensor.dtype)
            yield key, whole(tensor)


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` detached, gathered from its shards when it is a ``DTensor`` (FSDP2)."""
    from torch.distributed.tensor import DTensor

    if isinstance(tensor, DTensor):
        tensor = tensor.full_tensor()
    return tensor.detach()


class MergedModel:
    """A plain transformers model that samples with ``model``'s inference weights: for a PEFT
    LoRA model, a copy whose adapted layers hold base weight plus adapter delta
    (:func:`inference_weights`), reloaded whenever :func:`weights_version` moves; any other
    model is used as it is.

    Why: PEFT runs every adapted layer as base matmul plus two rank-``r`` matmuls, dropout and
    an add, which makes sampling forwards markedly slower than one merged matmul per layer
    (figures in docs/results.md). Merging in place
    (PEFT's ``merge_adapter``/``unmerge_adapter``, as TRL does for vLLM) would leave rounding
    residue in the trained base weights after every step; the copy shares every tensor the
    adapters do not touch (embeddings, norms), so it costs the adapted layers' size in memory
    while it exists (:meth:`release` drops it), and under autocast half of all linear layers'.

    Under autocast (bf16 sampling on a CPU) the copy's linear weights (adapted or not, the LM
    head included) are stored in the autocast dtype: every one of them only feeds a matmul
    that autocast runs in that dtype, so the results are the same, and the adapted layers take
    half the memory. Autocast would otherwise cast every one of them again at every forward (it
    caches casts of trainable weights only): for the frozen LM head, a 49,152 x 576 cast per
    decode step. A head tied to the input embeddings gets its own copy (the state dict names
    both), and the embeddings stay as they are.
    """

    def __init__(self, model: Any) -> None:
        from peft import PeftModel

        self.model = model
        self._peft = isinstance(model, PeftModel)
        self._copy: Any = None
        self._version: tuple[int, torch.dtype | None] | None = None
        self.loads = 0
        """How many times the copy was (re)loaded."""

    def current(self) -> Any:
        """The model to run forward passes with: up to date with ``model``'s weights now."""
        if not self._peft:
            return self.model
        dtype = autocast_dtype(next(self.model.parameters()).device.type)
        version = (weights_version(self.model), dtype)
        if self._copy is None:
            self._copy = self._empty_copy()
        if version != self._version:
            linear = {
                f"{name}.weight"
                for name, module in self._copy.named_modules()
                if isinstance(module, torch.nn.Linear)
            }
            weights = {
                name: tensor.to(dtype) if dtype is not None and name in linear else tensor
                for name, tensor in inference_weights(self.model)
            }
            self._copy.load_state_dict(weights, assign=True)
            self._version = version
            self.loads += 1
        return self._copy

    def release(self) -> None:
        """Drop the copy (its adapted layers' memory); the next :meth:`current` rebuilds it.
        Between runs that cost nothing extra during training: every optimizer step changes the
        weights, so the copy would be reloaded anyway."""
        self._copy = None
        self._version = None

    def _empty_copy(self) -> Any:
        """The base architecture with its parameters on the meta device (filled by the first
        load) and its buffers (rotary frequencies ...) shared with the trained model."""
        import copy

        from transformers import AutoModelForCausalLM

        base = self.model.get_base_model()
        with torch.device("meta"):
            clone = AutoModelForCausalLM.from_config(copy.deepcopy(base.config), dtype=base.dtype)
        clone.generation_config = base.generation_config
        saved = base.state_dict().keys()
        for name, buffer in base.named_buffers():
            owner, _, attribute = name.rpartition(".")
            module = clone.get_submodule(owner) if owner else clone
            module.register_buffer(attribute, buffer, persistent=name in saved)
        clone.eval().requires_grad_(False)
        return clone


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast computes in on ``device_type`` now, ``None`` when it is off."""
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def _lora_layers(model: Any) -> dict[str, Any]:
    """A PEFT model's LoRA layers by the plain transformers name of their weight."""
    from peft.tuners.lora import LoraLayer

    return {
        f"{name}.weight": module
        for name, module in model.get_base_model().named_modules()
        if isinstance(module, LoraLayer)
    }
