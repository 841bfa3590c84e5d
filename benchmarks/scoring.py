"""Seconds per scored episode: tau2's own ``evaluate_simulation`` against the scorer's cached
environment check, side by side in one run, per domain.

Episodes are gold replays through the runner (scripted policy), so every one reaches the
database check. Three timings per episode, each over the same episodes:

* ``before_s``: tau2's ``evaluate_simulation`` (rebuilds both environments from disk, hashes both);
* ``after_first_s``: :func:`score_trajectory` with every cache cleared except the process's
  parsed database (parsed once per process, before timing), so each task's gold hashes are
  computed in the timed call: the first time a run scores a task;
* ``after_s``: the same with each task's gold hashes kept and only the trajectory memo cleared:
  every later episode of the task with a new trajectory (GRPO groups, later evaluations).

Rewards are checked equal on every episode. Prints one JSON line per domain and a last line
with all domains together.

    OMP_NUM_THREADS=1 python benchmarks/scoring.py --tasks 12
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tau2.continual_learning import load_tokenizer
from tau2.continual_learning.rollout import load_tasks
from tau2.continual_learning.rollout.environments import shared_database_hash
from tau2.continual_learning.rollout.scoring import (
    environment_reward,
    gold_database_hashes,
    score_trajectory,
)
from tau2.continual_learning.rollout.scripted import replay_gold
from tau2.continual_learning.rollout.tau2_reference import reference_reward_info

WORKLOADS = {
    "airline": ("airline", "base", "tau2"),
    "retail": ("retail", "base", "tau2"),
    "telecom": ("telecom", "base", "tau2"),
    "skills/airline": ("airline", "train", "skills"),
    "skills/retail": ("retail", "train", "skills"),
    "skills/telecom": ("telecom", "train", "skills"),
}


def timed(fn, episodes: list, clear) -> tuple[float, list[float]]:
    rewards, total = [], 0.0
    for task, episode in episodes:
        clear()
        args = (task.environment_domain, task.task, episode.messages)
        start = time.perf_counter()
        reward = fn(*args, episode.termination_reason, task.env_solo_mode)
        total += time.perf_counter() - start
        rewards.append(reward if isinstance(reward, float) else reward.reward)
    return total / len(episodes), rewards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=12, help="tasks per workload (spread)")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    tokenizer = load_tokenizer()
    totals = {"episodes": 0, "before": 0.0, "after_first": 0.0, "after": 0.0}
    for name in args.workloads:
        domain, split, source = WORKLOADS[name]
        tasks = load_tasks(domain, split, source)
        tasks = tasks[:: max(1, len(tasks) // args.tasks)][: args.tasks]
        episodes = list(zip(tasks, replay_gold(tasks, tokenizer), strict=True))
        shared_database_hash.cache_clear()
        for task in tasks:  # parse the process's database outside the timings
            shared_database_hash(task.environment_domain, task.env_solo_mode)
            shared_database_hash(task.environment_domain, False)

        def clear_all() -> None:
            environment_reward.cache_clear()
            gold_database_hashes.cache_clear()

        def score(*a):
            return score_trajectory(*a)[0]

        before, reference = timed(reference_reward_info, episodes, lambda: None)
        first, rewards_first = timed(score, episodes, clear_all)
        after, rewards = timed(score, episodes, environment_reward.cache_clear)
        if not reference == rewards_first == rewards:
            raise SystemExit(f"{name}: rewards differ: {reference} {rewards_first} {rewards}")
        line = {
            "workload": name,
            "episodes": len(episodes),
            "mean_reward": round(sum(rewards) / len(rewards), 3),
            "before_s": round(before, 4),
            "after_first_s": round(first, 4),
            "after_s": round(after, 4),
            "ratio": round(before / after, 1),
            "ratio_first": round(before / first, 1),
        }
        print(json.dumps(line), flush=True)
        totals["episodes"] += len(episodes)
        for key, value in (("before", before), ("after_first", first), ("after", after)):
            totals[key] += value * len(episodes)
    n = totals["episodes"]
    print(
        json.dumps(
            {
                "workload": "all",
                "episodes": n,
                "before_s": round(totals["before"] / n, 4),
                "after_first_s": round(totals["after_first"] / n, 4),
                "after_s": round(totals["after"] / n, 4),
                "ratio": round(totals["before"] / totals["after"], 1),
                "ratio_first": round(totals["before"] / totals["after_first"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
