"""What a GPU does with policies of real sizes: tokens/s of the HF sampling engine, one GRPO step's
time, and peak memory, for randomly initialised models with the shapes of Qwen2.5-1.5B and
Qwen2.5-7B (built from ``transformers.Qwen2Config``; nothing is downloaded). Prints one JSON line
per measurement.

    python scripts/gpu_check.py                              # both models, on the GPU
    python scripts/gpu_check.py --models qwen2.5-7b --batch 32
    python scripts/gpu_check.py --tiny                       # seconds on a CPU: a smoke test

The tokenizer is the embedded model's (its ids are a subset of Qwen's vocabulary); scores of a
random model mean nothing, times and memory are what is measured. The GRPO step is a real
continual run of one step (``GRPOTrainer``, LoRA by default, one skills domain, no warm start,
no evaluation beyond one task): TRL's ``step_time`` (rollouts, scoring, the update) of that step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QWEN_SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "qwen2.5-7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
    ),
}
"""The published configurations of the two models (config.json on the Hub)."""


def build_model(shape: dict[str, Any], tokenizer: Any, dtype: Any, device: str) -> Any:
    """A randomly initialised Qwen2 causal LM of ``shape`` on ``device``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        **shape,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(dtype)
    return model.eval()


def peak_memory_gb(device: str) -> float | None:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return None


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def measure_generation(
    model: Any, tokenizer: Any, batch: int, prompt_tokens: int, new_tokens: int, device: str
) -> dict[str, Any]:
    """Tokens/s of the HF sampling engine (``HFPolicy``) on ``batch`` random prompts."""
    import torch

    from tau2.continual_learning.rollout import HFPolicy, SamplingParams

    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(100, 40000, (batch, prompt_tokens), generator=generator).tolist()
    policy = HFPolicy(model, tokenizer)
    sampling = SamplingParams(max_new_tokens=new_tokens, temperature=1.0)
    policy.generate(prompts[:1], SamplingParams(max_new_tokens=2), seed=0)  # warm-up
    reset_peak(device)
    start = time.perf_counter()
    generations = policy.generate(prompts, sampling, seed=0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = sum(len(g.token_ids) for g in generations)
    return {
        "measure": "hf_generation",
        "batch": batch,
        "prompt_tokens": prompt_tokens,
        "new_tokens_per_row": new_tokens,
        "generated_tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1),
        "peak_memory_gb": peak_memory_gb(device),
    }


def measure_grpo_step(model: Any, tokenizer: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One GRPO step of a real one-domain continual run: TRL's ``step_time`` and peak memory."""
    from tau2.continual_learning import GRPOConfig, GRPOTrainer

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as out:
        config = GRPOConfig(
            output_dir=out,
            domains=["telecom"],
            max_steps_per_domain=1,
            eval_tasks_per_domain=1,
            warm_start_demos_per_domain=0,
            batch_size_per_gpu=args.groups,
            num_samples_per_prompt=args.group_size,
            micro_batch_size=args.micro_batch,
            max_turns=args.turns,
            max_new_tokens_per_turn=args.new_tokens,
            use_peft=not args.full,
            report_to=[],
            save_strategy="no",
        )
        trainer = GRPOTrainer(config, model=model, tokenizer=tokenizer)
        reset_peak(args.device)
        trainer.train()
        trainer.close()
    step = next(row for row in trainer.record.log_rows if "step_time" in row)
    return {
        "measure": "grpo_step",
        "lora": not args.full,
        "episodes": args.groups * args.group_size,
        "micro_batch": args.micro_batch,
        "step_time_s": round(float(step["step_time"]), 3),
        "peak_memory_gb": peak_memory_gb(args.device),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(QWEN_SHAPES), help="comma-separated")
    parser.add_argument(
        "--tiny", action="store_true", help="the tests' tiny model, a CPU smoke test"
    )
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--batch", type=int, default=16, help="generation: prompts per call")
    parser.add_argument("--prompt_tokens", type=int, default=1024)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--groups", type=int, default=2, help="GRPO step: task groups")
    parser.add_argument("--group_size", type=int, default=4, help="GRPO step: episodes per task")
    parser.add_argument("--micro_batch", type=int, default=1)
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--skip", default="", help="comma-separated: hf_generation,grpo_step")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import torch

    from tau2.continual_learning import load_tokenizer
    from tau2.continual_learning.tiny_model import build_tiny_model

    args = parse(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    tokenizer = load_tokenizer()
    skip = set(filter(None, args.skip.split(",")))
    for name in args.models.split(","):
        if name not in QWEN_SHAPES:
            raise SystemExit(f"--models: {name!r} is not one of {sorted(QWEN_SHAPES)}")
        about = {"model": name + (" (tiny)" if args.tiny else ""), "device": args.device}
        if args.device.startswith("cuda"):
            about["gpu"] = torch.cuda.get_device_name()
        if args.tiny:  # the tests' tiny random model: the whole path in seconds on a CPU
            model = build_tiny_model(tokenizer, hidden_size=64, num_heads=2).to(args.device, dtype)
        else:
            model = build_model(QWEN_SHAPES[name], tokenizer, dtype, args.device)
        about["parameters_b"] = round(sum(p.numel() for p in model.parameters()) / 1e9, 3)
        if "hf_generation" not in skip:
            result = measure_generation(
                model, tokenizer, args.batch, args.prompt_tokens, args.new_tokens, args.device
            )
            print(json.dumps(about | result), flush=True)
        if "grpo_step" not in skip:
            print(json.dumps(about | measure_grpo_step(model, tokenizer, args)), flush=True)
        del model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
