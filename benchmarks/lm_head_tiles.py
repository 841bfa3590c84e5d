"""TRL's fused LM head on a CPU, by tile width: the forward and backward of one pass's log-probs.

The embedded model's head shape (49,152 x 576, float32, frozen like a LoRA run's), hidden
states of ``--tokens`` positions, under bf16 autocast where the machine supports it (as the
trainer runs; ``--float32`` turns it off), log-probs and entropies as the GRPO loss asks for
them. For every token count and tile width (``--widths``; TRL's own is 32,768), one JSON line:
``tokens``, ``columns``, ``ms`` (median forward + backward over ``--repeats``, after one
untimed call), ``bf16``.
:mod:`~tau2.continual_learning.grpo.lm_head_tiles` picks the width from these figures.

    python benchmarks/lm_head_tiles.py
    python benchmarks/lm_head_tiles.py --tokens 300 --widths 32768 1024 --repeats 3
    python benchmarks/lm_head_tiles.py --float32
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from trl.kernels import ChunkedLogProbFunction

from tau2.continual_learning.grpo.config import bf16_supported

VOCABULARY, HIDDEN = 49152, 576


def fwd_bwd_ms(tokens: int, columns: int, bf16: bool, repeats: int) -> float:
    """Median milliseconds of one forward and backward of the fused head in ``columns``-wide
    tiles over ``tokens`` hidden states."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(VOCABULARY, HIDDEN, generator=generator) * 0.02
    targets = torch.randint(0, VOCABULARY, (tokens,), generator=generator)
    times = []
    for _ in range(repeats + 1):
        hidden = torch.randn(tokens, HIDDEN, generator=generator, requires_grad=True)
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logps, entropy, *_ = ChunkedLogProbFunction.apply(
                hidden, weight, None, targets, 1.0, columns
            )
        (logps.sum() + entropy.sum()).backward()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times[1:])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[64, 300, 1200])
    parser.add_argument("--widths", type=int, nargs="+", default=[32768, 4096, 1024, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--float32", action="store_true", help="no bf16 autocast (as on an AVX2-only machine)"
    )
    args = parser.parse_args(argv)
    if min(args.tokens + args.widths + [args.repeats]) < 1:
        parser.error("--tokens, --widths and --repeats must be >= 1")
    bf16 = bf16_supported() and not args.float32
    lines = []
    for tokens in args.tokens:
        for columns in args.widths:
            line = {
                "tokens": tokens,
                "columns": columns,
                "ms": round(fwd_bwd_ms(tokens, columns, bf16, args.repeats), 1),
                "bf16": bf16,
            }
            print(json.dumps(line), flush=True)
            lines.append(line)
    return lines


if __name__ == "__main__":
    main()
