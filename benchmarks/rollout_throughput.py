"""Rollout throughput: the same episodes run batched by EpisodeRunner and one at a time.

"One at a time" is how tau2's orchestrator works: one episode, one model call per turn,
scored inline after it ends. Both runs use the same model, tasks, seed and limits, in one
process. Prints one JSON line with the figures (see docs/rollout.md for recorded numbers).

    python benchmarks/rollout_throughput.py                 # embedded SmolLM2-135M-Instruct
    python benchmarks/rollout_throughput.py --model tiny    # tiny random model (smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tau2.continual_learning import load_model_and_tokenizer, load_tokenizer
from tau2.continual_learning.rollout import EpisodeRunner, HFPolicy, SamplingParams, load_tasks
from tau2.continual_learning.tiny_model import build_tiny_model


def skill_mix(num_episodes: int) -> list:
    """``num_episodes`` skill tasks taken round-robin from the three skill domains."""
    pools = [load_tasks(d, "train", task_source="skills") for d in ("airline", "retail", "telecom")]
    return [pools[i % 3][i // 3] for i in range(num_episodes)]


def timed_run(runner: EpisodeRunner, batches: list[list]) -> tuple[float, int, list]:
    start = time.perf_counter()
    episodes = [e for batch in batches for e in runner.run(batch)]
    return time.perf_counter() - start, sum(e.num_model_tokens for e in episodes), episodes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        default=None,
        help="model name/path; 'tiny' = tiny random model; default: embedded",
    )
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--max_turns", type=int, default=3)
    parser.add_argument("--max_new_tokens_per_turn", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.model == "tiny":
        tokenizer = load_tokenizer()
        model = build_tiny_model(tokenizer)
    else:
        model, tokenizer = load_model_and_tokenizer(args.model)
    tasks = skill_mix(args.episodes)
    settings = {
        "max_turns": args.max_turns,
        "max_new_tokens_per_turn": args.max_new_tokens_per_turn,
        "temperature": args.temperature,
        "seed": args.seed,
    }
    policy = HFPolicy(model, tokenizer)
    policy.generate([[tokenizer.eos_token_id] * 8], SamplingParams(max_new_tokens=4))  # warm-up
    with EpisodeRunner(policy, scoring_workers=1, **settings) as runner:
        batched_s, batched_tokens, batched = timed_run(runner, [tasks])
    with EpisodeRunner(policy, scoring_workers=0, **settings) as runner:
        sequential_s, sequential_tokens, sequential = timed_run(runner, [[t] for t in tasks])
    n = len(tasks)
    print(
        json.dumps(
            {
                "batched_episodes_per_s": round(n / batched_s, 4),
                "sequential_episodes_per_s": round(n / sequential_s, 4),
                "batched_tokens_per_s": round(batched_tokens / batched_s, 2),
                "sequential_tokens_per_s": round(sequential_tokens / sequential_s, 2),
                "speedup": round(sequential_s / batched_s, 2),
                "episodes": n,
                "batched_s": round(batched_s, 1),
                "sequential_s": round(sequential_s, 1),
                "batched_mean_reward": sum(e.reward for e in batched) / n,
                "sequential_mean_reward": sum(e.reward for e in sequential) / n,
                "model": args.model or "SmolLM2-135M-Instruct",
                **settings,
            }
        )
    )


if __name__ == "__main__":
    main()
