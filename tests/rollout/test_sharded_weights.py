"""The inference weights of a model sharded by FSDP2: two CPU ranks (gloo) shard the tiny model
with torch's ``fully_shard`` (its parameters become ``DTensor`` shards, as under accelerate's
FSDP2 plugin); ``inference_weights`` then yields every weight whole, one at a time, equal to
those of the unsharded model (full fine-tuning and LoRA, whose merged weights are computed from
the shards)."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tau2.continual_learning.model_loading import wrap_lora
from tau2.continual_learning.rollout.engines.weights import inference_weights
from tau2.continual_learning.tiny_model import build_tiny_model

WORLD = 2


def tiny(tokenizer, lora: bool) -> torch.nn.Module:
    """The same model on every rank (FSDP2 takes each rank's chunk of its own copy); with LoRA,
    adapters drawn from one seed that change the weights (PEFT starts B at 0)."""
    model = build_tiny_model(tokenizer, seed=0)
    if lora:
        model = wrap_lora(model, r=4, alpha=8, dropout=0.0, target_modules=None)
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model


def shard(model: torch.nn.Module) -> None:
    """FSDP2 as accelerate applies it: each decoder layer, then the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (WORLD,))
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for layer in base.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def rank_main(rank: int, init_file: str, tokenizer) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        for lora in (False, True):
            check_gathered(tiny(tokenizer, lora), atol=1e-6 if lora else 0.0)
    finally:
        dist.destroy_process_group()


def check_gathered(model: torch.nn.Module, atol: float) -> None:
    from torch.distributed.tensor import DTensor

    expected = {name: t.clone() for name, t in inference_weights(model)}
    shard(model)
    sharded = [p for p in model.parameters() if isinstance(p, DTensor)]
    assert sharded and all(p.to_local().numel() < p.numel() for p in sharded)
    weights = inference_weights(model)
    assert inspect.isgenerator(weights)  # gathered one by one, as the engine loads them
    names = []
    for name, tensor in weights:
        names.append(name)
        assert type(tensor) is torch.Tensor, (name, type(tensor))
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=atol)
    assert names == list(expected)


def main(init_file: str) -> None:
    """Fork the ranks from this fresh interpreter: it has loaded the tokenizer and run no
    threads yet (forking from the test session, with its thread pools, can deadlock a rank)."""
    from tau2.continual_learning.model_loading import load_tokenizer

    mp.start_processes(rank_main, (init_file, load_tokenizer()), nprocs=WORLD, start_method="fork")


def test_sharded_weights_are_gathered_whole_and_equal(tmp_path):
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, __file__, str(tmp_path / "init")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a hung rank is killed with it
    )
    try:
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, output[-4000:]


if __name__ == "__main__":
    main(sys.argv[1])
